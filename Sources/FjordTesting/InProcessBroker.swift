public import FjordBroker
import FjordServer
import Foundation
import Logging
import NIOCore
import NIOPosix

/// A real broker (storage, coordinator, server) running inside the test process on a free
/// loopback port with a temporary data directory: for contract tests of FjordClient. Tests that
/// need a separate process start `fjord serve` instead (Tests/Integration).
public final class InProcessBroker: Sendable {
    public let broker: Broker
    public let port: Int
    public let dataDirectory: String
    private let server: KafkaServer
    private let group: MultiThreadedEventLoopGroup

    public var bootstrap: String { "127.0.0.1:\(port)" }

    private init(broker: Broker, server: KafkaServer, group: MultiThreadedEventLoopGroup, port: Int, dataDirectory: String) {
        self.broker = broker
        self.server = server
        self.group = group
        self.port = port
        self.dataDirectory = dataDirectory
    }

    /// Starts a broker; `settings` are server.properties overrides.
    public static func start(settings: [String: String] = [:]) async throws -> InProcessBroker {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fjord-inprocess-\(UUID().uuidString)").path
        return try await start(settings: settings, directory: directory, port: 0)
    }

    /// Stops this broker as a clean shutdown does and starts a new one on the same port and data
    /// directory (clients see the connection drop and reconnect).
    public func restart(settings: [String: String] = [:]) async throws -> InProcessBroker {
        await server.stop()
        try await broker.shutdown()
        try await group.shutdownGracefully()
        var lastError: (any Error)? = nil
        for _ in 0..<50 {  // the port may linger for a moment
            do {
                return try await Self.start(settings: settings, directory: dataDirectory, port: port)
            } catch {
                lastError = error
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        throw lastError!
    }

    private static func start(settings: [String: String], directory: String, port: Int) async throws -> InProcessBroker {
        var overrides = ["log.dirs": directory, "listeners": "PLAINTEXT://127.0.0.1:\(port)", "group.initial.rebalance.delay.ms": "0"]
        for (key, value) in settings { overrides[key] = value }
        let config = try BrokerConfig.parse(overrides: overrides)
        var logger = Logger(label: "fjord-test-broker")
        logger.logLevel = .warning
        let broker = try await Broker.start(config: config, logger: logger)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await KafkaServer.start(broker: broker, group: group, logger: logger)
        return InProcessBroker(broker: broker, server: server, group: group, port: server.boundPorts.first ?? 0, dataDirectory: directory)
    }

    /// Stops the server, closes the logs and removes the data directory.
    public func stop() async throws {
        await server.stop()
        try await broker.shutdown()
        try await group.shutdownGracefully()
        try? FileManager.default.removeItem(atPath: dataDirectory)
    }
}
