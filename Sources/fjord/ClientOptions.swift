import ArgumentParser
import FjordClient
import Foundation
import Logging

/// Options every client subcommand shares: where the cluster is and client properties.
struct ClientOptions: ParsableArguments {
    @Option(name: [.customShort("b"), .long],
            help: "Bootstrap broker(s), host:port[,host:port] (default: $FJORD_BOOTSTRAP or 127.0.0.1:9092).")
    var bootstrapServer: String?

    @Option(name: .long, help: ArgumentHelp("A file of client properties (key=value lines, # comments).", valueName: "file"))
    var commandConfig: String?

    @Option(name: .customShort("X"), help: ArgumentHelp("A client property, as librdkafka's -X (repeatable).", valueName: "key=value"))
    var properties: [String] = []

    var bootstrap: String {
        bootstrapServer ?? ProcessInfo.processInfo.environment["FJORD_BOOTSTRAP"] ?? "127.0.0.1:9092"
    }

    /// The merged properties: the command-config file, then -X, then --bootstrap-server.
    func clientProperties() throws -> [String: String] {
        var result: [String: String] = [:]
        if let commandConfig {
            guard let text = try? String(contentsOfFile: commandConfig, encoding: .utf8) else {
                throw CLIError("cannot read --command-config file \(commandConfig)")
            }
            for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let line = rawLine.trimmingCharacters(in: .whitespaces)
                if line.isEmpty || line.hasPrefix("#") || line.hasPrefix("!") { continue }
                guard let equals = line.firstIndex(where: { $0 == "=" || $0 == ":" }) else {
                    throw CLIError("\(commandConfig):\(number + 1): expected key=value")
                }
                result[line[..<equals].trimmingCharacters(in: .whitespaces)] =
                    line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            }
        }
        for property in properties {
            guard let equals = property.firstIndex(of: "=") else { throw CLIError("-X \(property): expected key=value") }
            result[String(property[..<equals])] = String(property[property.index(after: equals)...])
        }
        if bootstrapServer != nil || result["bootstrap.servers"] == nil { result["bootstrap.servers"] = bootstrap }
        return result
    }

    func producerConfiguration(clientID: String = "fjord-cli-producer", _ extra: [String: String] = [:]) throws -> ProducerConfiguration {
        var properties = try clientProperties()
        if properties["client.id"] == nil { properties["client.id"] = clientID }
        for (key, value) in extra { properties[key] = value }
        return try ProducerConfiguration(properties: properties)
    }

    func consumerConfiguration(clientID: String = "fjord-cli-consumer", _ extra: [String: String] = [:]) throws -> ConsumerConfiguration {
        var properties = try clientProperties()
        if properties["client.id"] == nil { properties["client.id"] = clientID }
        for (key, value) in extra { properties[key] = value }
        return try ConsumerConfiguration(properties: properties)
    }

    /// Admin settings: the shared client keys only (producer/consumer keys are ignored here).
    func clientConfiguration(clientID: String = "fjord-cli-admin") throws -> ClientConfiguration {
        var configuration = ClientConfiguration(bootstrap: bootstrap, clientID: clientID)
        for (key, value) in try clientProperties().sorted(by: { $0.key < $1.key }) {
            _ = try configuration.apply(key, value)
        }
        return configuration
    }

    func admin() async throws -> KafkaAdmin {
        try await KafkaAdmin.connect(try clientConfiguration())
    }
}

/// A failure the CLI reports as one line on stderr, with exit code 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs a subcommand body: any error becomes `fjord <command>: <message>` on stderr and exit
/// code 1 (usage errors stay ArgumentParser's, exit code 64).
func reportingErrors(_ command: String, _ body: () async throws -> Void) async throws {
    bootstrapLogging()
    do {
        try await body()
    } catch let exit as ExitCode {
        throw exit
    } catch {
        FileHandle.standardError.write(Data("fjord \(command): \(error)\n".utf8))
        throw ExitCode(1)
    }
}

/// Help text as paragraphs: each blank-line-separated paragraph's lines joined with spaces, so
/// ArgumentParser wraps it to the terminal instead of breaking at the source's line ends.
func prose(_ text: String) -> String {
    text.components(separatedBy: "\n\n")
        .map { paragraph in paragraph.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ") }
        .joined(separator: "\n\n")
}

/// Client logs go to stderr (stdout is for records), at `defaultLevel` unless $FJORD_LOG_LEVEL
/// says otherwise.
func bootstrapLogging(defaultLevel: Logger.Level = .warning) {
    let level = ProcessInfo.processInfo.environment["FJORD_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? defaultLevel
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}

/// Buffered writes to stdout (one `write` per flush, not per record).
struct OutputBuffer {
    private var bytes: [UInt8] = []

    init() { bytes.reserveCapacity(1 << 16) }

    mutating func write(_ text: String) {
        bytes.append(contentsOf: text.utf8)
        if bytes.count >= 1 << 16 { flush() }
    }

    mutating func write<C: Collection>(bytes data: C) where C.Element == UInt8 {
        bytes.append(contentsOf: data)
        if bytes.count >= 1 << 16 { flush() }
    }

    mutating func flush() {
        guard !bytes.isEmpty else { return }
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Foundation.write(1, raw.baseAddress! + offset, raw.count - offset)
                if written <= 0 { break }
                offset += written
            }
        }
        bytes.removeAll(keepingCapacity: true)
    }
}

/// Parses an ISO 8601 date-time (with or without fractional seconds; `Z` or an offset) to ms.
func parseISO8601(_ text: String) throws -> Int64 {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970 * 1000) }
    formatter.formatOptions = [.withInternetDateTime]
    if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970 * 1000) }
    throw CLIError("'\(text)' is not an ISO 8601 date-time such as 2026-11-23T10:00:00Z")
}

/// Splits `key=value`.
func splitAssignment(_ text: String, option: String) throws -> (String, String) {
    guard let equals = text.firstIndex(of: "=") else { throw CLIError("\(option) \(text): expected key=value") }
    return (String(text[..<equals]), String(text[text.index(after: equals)...]))
}

/// Runs `body` with an admin client that is closed afterwards, whatever happens.
func withAdmin<T>(_ client: ClientOptions, _ body: (KafkaAdmin) async throws -> T) async throws -> T {
    let admin = try await client.admin()
    do {
        let result = try await body(admin)
        await admin.close()
        return result
    } catch {
        await admin.close()
        throw error
    }
}
