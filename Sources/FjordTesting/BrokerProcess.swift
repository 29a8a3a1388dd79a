#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
public import Foundation
import Synchronization

/// A `fjord serve` child process on a free loopback port with a temporary data directory: for
/// tests that must kill the broker (SIGKILL) and start it again on the same data, which an
/// in-process broker cannot survive. The executable is the `fjord` built next to the running
/// test binary (`swift build` puts every product in one directory). Every wait is async and
/// off the cooperative pool (see `ChildProcess`).
public final class BrokerProcess: Sendable {
    public let port: Int
    public let dataDirectory: String
    public let logPath: String
    private let settings: [String: String]
    private let process = Mutex<ChildProcess?>(nil)

    public var bootstrap: String { "127.0.0.1:\(port)" }

    /// The directory of the running executable, where SwiftPM puts every product it built.
    public static var productsDirectory: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    }

    public enum Failure: Error, CustomStringConvertible {
        case notBuilt(String)
        case exited(status: Int32, log: String)
        case notListening(port: Int)

        public var description: String {
            switch self {
            case .notBuilt(let path): return "\(path) is not built (swift build)"
            case .exited(let status, let log): return "fjord serve exited with \(status): \(log.suffix(2_000))"
            case .notListening(let port): return "fjord serve did not listen on \(port) within 30 s"
            }
        }
    }

    /// Starts `fjord serve`; `settings` are `--set key=value` overrides.
    public static func start(settings: [String: String] = [:]) async throws -> BrokerProcess {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fjord-process-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var merged = ["group.initial.rebalance.delay.ms": "0"]
        for (key, value) in settings { merged[key] = value }
        let broker = BrokerProcess(port: try freePort(), dataDirectory: directory + "/data", logPath: directory + "/fjord.log", settings: merged)
        do {
            try await broker.launch()
        } catch {
            await broker.remove()
            throw error
        }
        return broker
    }

    /// Starts a broker, runs `body` with it, and removes it however `body` ends.
    public static func with<Result>(settings: [String: String] = [:], _ body: (BrokerProcess) async throws -> Result) async throws -> Result {
        let broker = try await start(settings: settings)
        do {
            let result = try await body(broker)
            await broker.remove()
            return result
        } catch {
            await broker.remove()
            throw error
        }
    }

    private init(port: Int, dataDirectory: String, logPath: String, settings: [String: String]) {
        self.port = port
        self.dataDirectory = dataDirectory
        self.logPath = logPath
        self.settings = settings
    }

    private func launch() async throws {
        let executable = Self.productsDirectory.appendingPathComponent("fjord")
        guard FileManager.default.isExecutableFile(atPath: executable.path) else { throw Failure.notBuilt(executable.path) }
        let arguments = ["serve", "--data-dir", dataDirectory, "--listeners", "PLAINTEXT://127.0.0.1:\(port)"]
            + settings.sorted(by: { $0.key < $1.key }).flatMap { ["--set", "\($0.key)=\($0.value)"] }
        let child = try ChildProcess(executable.path, arguments, output: .file(logPath))
        process.withLock { $0 = child }
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if let status = child.exitStatus { throw Failure.exited(status: status, log: log) }
            if Self.accepts(port: port) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw Failure.notListening(port: port)
    }

    /// Kills the broker with SIGKILL (no shutdown, no flush) and waits for it to be gone.
    public func kill() async {
        await signal(SIGKILL)
    }

    /// Stops the broker with SIGTERM (a clean shutdown) and waits for it to exit.
    public func stop() async {
        await signal(SIGTERM)
    }

    private func signal(_ number: Int32) async {
        guard let child = process.withLock({ current in defer { current = nil }; return current }) else { return }
        await child.stop(with: number)
    }

    /// Starts the broker again on the same port and data directory.
    public func restart() async throws {
        await stop()
        try await launch()
    }

    /// Starts the broker again after `kill()` (the data directory as the crash left it).
    public func start() async throws {
        try await launch()
    }

    /// Stops the broker and removes its directory.
    public func remove() async {
        await stop()
        try? FileManager.default.removeItem(atPath: (dataDirectory as NSString).deletingLastPathComponent)
    }

    /// The broker's log (stdout and stderr of every run).
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    #if canImport(Glibc)
    static let streamSocket = Int32(SOCK_STREAM.rawValue)
    #else
    static let streamSocket = SOCK_STREAM
    #endif

    /// A loopback TCP port nothing listens on right now.
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, streamSocket, 0)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddrPointer in
                bind(fd, sockaddrPointer, length) == 0 && getsockname(fd, sockaddrPointer, &length) == 0
            }
        }
        guard bound else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether something accepts connections on this loopback port.
    public static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, streamSocket, 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
