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
/// test binary (`swift build` puts every product in one directory).
public final class BrokerProcess: Sendable {
    public let port: Int
    public let dataDirectory: String
    public let logPath: String
    private let settings: [String: String]
    private let process = Mutex<Process?>(nil)

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
    public static func start(settings: [String: String] = [:]) throws -> BrokerProcess {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fjord-process-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var merged = ["group.initial.rebalance.delay.ms": "0"]
        for (key, value) in settings { merged[key] = value }
        let broker = BrokerProcess(port: try freePort(), dataDirectory: directory + "/data", logPath: directory + "/fjord.log", settings: merged)
        try broker.launch()
        return broker
    }

    private init(port: Int, dataDirectory: String, logPath: String, settings: [String: String]) {
        self.port = port
        self.dataDirectory = dataDirectory
        self.logPath = logPath
        self.settings = settings
    }

    private func launch() throws {
        let executable = Self.productsDirectory.appendingPathComponent("fjord")
        guard FileManager.default.isExecutableFile(atPath: executable.path) else { throw Failure.notBuilt(executable.path) }
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        try log.seekToEnd()
        let child = Process()
        child.executableURL = executable
        child.arguments = ["serve", "--data-dir", dataDirectory, "--listeners", "PLAINTEXT://127.0.0.1:\(port)"]
            + settings.sorted(by: { $0.key < $1.key }).flatMap { ["--set", "\($0.key)=\($0.value)"] }
        child.standardOutput = log
        child.standardError = log
        try child.run()
        try? log.close()
        process.withLock { $0 = child }
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            guard child.isRunning else {
                throw Failure.exited(status: child.terminationStatus, log: (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")
            }
            if Self.accepts(port: port) { return }
            usleep(50_000)
        }
        throw Failure.notListening(port: port)
    }

    /// Kills the broker with SIGKILL (no shutdown, no flush) and waits for it to be gone.
    public func kill() {
        signal(SIGKILL)
    }

    /// Stops the broker with SIGTERM (a clean shutdown) and waits for it to exit.
    public func stop() {
        signal(SIGTERM)
    }

    private func signal(_ number: Int32) {
        guard let child = process.withLock({ current in defer { current = nil }; return current }) else { return }
        if child.isRunning {
            #if canImport(Glibc)
            _ = Glibc.kill(child.processIdentifier, number)
            #else
            _ = Darwin.kill(child.processIdentifier, number)
            #endif
        }
        child.waitUntilExit()
    }

    /// Starts the broker again on the same port and data directory.
    public func restart() throws {
        stop()
        try launch()
    }

    /// Starts the broker again after `kill()` (the data directory as the crash left it).
    public func start() throws {
        try launch()
    }

    /// Stops the broker and removes its directory.
    public func remove() {
        stop()
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
