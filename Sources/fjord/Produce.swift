import ArgumentParser
import FjordClient
import FjordProtocol
import Foundation
import NIOCore
import Synchronization

/// `fjord produce TOPIC [FILE…]`: one record per input line.
struct Produce: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Produce records to a topic, one per line of stdin (or of the given files).",
        discussion: prose("""
            With --key-separator, each line is split at the first separator into key and value.
            A record that fails is reported on stderr with its line number; the exit code is 1 if
            any record failed. Idempotence is on, as in Kafka's producer.
            """))

    @OptionGroup var client: ClientOptions

    @Argument(help: "The topic.")
    var topic: String

    @Argument(help: "Files to read instead of stdin.")
    var files: [String] = []

    @Option(name: [.customShort("K"), .long], help: "Split each line into key and value at this separator.")
    var keySeparator: String?

    @Option(name: [.customShort("H"), .long], help: ArgumentHelp("A header for every record (repeatable).", valueName: "key=value"))
    var header: [String] = []

    @Option(name: [.customShort("p"), .long], help: "Write every record to this partition (default: the key's, or sticky).")
    var partition: Int32?

    @Option(help: "acks: 0, 1 or all.")
    var acks: String?

    @Option(name: [.customShort("z"), .long], help: "Compression: none, gzip, snappy, lz4, zstd.")
    var compression: String?

    @Option(help: "linger.ms.")
    var lingerMs: Int?

    func run() async throws {
        try await reportingErrors("produce") {
            var extra: [String: String] = [:]
            if let acks {
                extra["acks"] = acks
                if acks != "all" && acks != "-1" { extra["enable.idempotence"] = "false" }
            }
            if let compression { extra["compression.type"] = compression }
            if let lingerMs { extra["linger.ms"] = String(lingerMs) }
            let configuration = try client.producerConfiguration(extra)
            let headers = try header.map { text -> RecordHeader in
                let (key, value) = try splitAssignment(text, option: "--header")
                return RecordHeader(key: key, value: ByteBuffer(string: value))
            }
            let producer = try await KafkaProducer.connect(configuration)
            let failures = Mutex(0)
            var lineNumber = 0
            func send(_ line: String) async throws {
                lineNumber += 1
                let number = lineNumber
                var key: ByteBuffer? = nil
                var value = Substring(line)
                if let separator = keySeparator, let range = line.range(of: separator) {
                    key = ByteBuffer(string: String(line[..<range.lowerBound]))
                    value = line[range.upperBound...]
                }
                try await producer.produce(topic: topic, key: key, value: ByteBuffer(string: String(value)),
                                           headers: headers, partition: partition) { result in
                    if case .failure(let error) = result {
                        failures.withLock { $0 += 1 }
                        FileHandle.standardError.write(Data("fjord produce: record \(number) failed: \(error)\n".utf8))
                    }
                }
            }
            do {
                if files.isEmpty {
                    while let line = readLine(strippingNewline: true) { try await send(line) }
                } else {
                    for file in files {
                        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                            throw CLIError("cannot read \(file)")
                        }
                        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
                        if lines.last == "" { lines.removeLast() }
                        for line in lines { try await send(String(line)) }
                    }
                }
            } catch {
                await producer.close()
                throw error
            }
            await producer.close()
            let failed = failures.withLock { $0 }
            if failed > 0 { throw CLIError("\(failed) of \(lineNumber) records failed") }
        }
    }
}
