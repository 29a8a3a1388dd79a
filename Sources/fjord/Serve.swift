import ArgumentParser
import FjordBroker
import FjordMetadata
import FjordMetadataEtcd
import FjordServer
import Foundation
import Logging
import NIOCore
import NIOPosix
import Metrics
import Prometheus
import ServiceLifecycle
import Synchronization
import UnixSignals

/// `fjord serve`: runs a broker until SIGTERM or SIGINT, then shuts down cleanly.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a broker.",
        discussion: prose("""
            Configuration uses Kafka's server.properties keys (log.dirs, listeners, advertised.listeners,
            num.partitions, log.retention.hours, log.segment.bytes, auto.create.topics.enable, node.id, ...).
            Later sources win: --config FILE, then --set, then --data-dir/--listeners.
            """)
    )

    @Option(name: .long, help: "A server.properties file.")
    var config: String?

    @Option(name: .customLong("set"), help: ArgumentHelp("Override one config key (repeatable).", valueName: "key=value"))
    var overrides: [String] = []

    @Option(name: .long, help: "Data directory (log.dirs).")
    var dataDir: String?

    @Option(name: .long, help: "Listeners, e.g. PLAINTEXT://127.0.0.1:9092 (listeners).")
    var listeners: String?

    @Option(name: .long, help: "This broker's id in a cluster (node.id).")
    var nodeId: Int32?

    @Option(name: .long, help: ArgumentHelp("Join the cluster whose metadata is on this etcd (fjord.cluster); without it, run the single-node broker.",
                                            valueName: "etcd://host:port[/prefix]"))
    var cluster: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "fjord")
        let brokerConfig: BrokerConfig
        do {
            brokerConfig = try loadConfig(logger: logger)
        } catch {
            FileHandle.standardError.write(Data("fjord serve: \(error)\n".utf8))
            throw ExitCode(1)
        }
        let registry = PrometheusCollectorRegistry()
        if brokerConfig.metricsListener != nil {
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        }
        let service = BrokerService(config: brokerConfig, logger: logger, registry: registry)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: service)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            cancellationSignals: [],
            logger: logger))
        do {
            try await group.run()
        } catch {
            FileHandle.standardError.write(Data("fjord serve: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }

    func loadConfig(logger: Logger) throws -> BrokerConfig {
        var text = ""
        if let config {
            guard let contents = try? String(contentsOfFile: config, encoding: .utf8) else {
                throw ConfigError("cannot read config file \(config)")
            }
            text = contents
        }
        var values: [String: String] = [:]
        for override in overrides {
            guard let equals = override.firstIndex(of: "=") else {
                throw ConfigError("--set \(override): expected key=value")
            }
            values[String(override[..<equals])] = String(override[override.index(after: equals)...])
        }
        if let dataDir { values["log.dirs"] = dataDir }
        if let listeners { values["listeners"] = listeners }
        if let nodeId { values["node.id"] = String(nodeId) }
        if let cluster { values["fjord.cluster"] = cluster }
        let parsed = try BrokerConfig.parse(properties: text, overrides: values)
        if let cluster = parsed.cluster {
            _ = try EtcdClusterAddress(parsing: cluster)
            guard parsed.advertised.port != 0 else {
                throw ConfigError("a cluster broker needs a fixed listener port (other brokers and clients are told it)")
            }
            // Followers connect to leaders as clients of the inter-broker listener: its settings
            // must be complete before any log is opened.
            do {
                _ = try ClientLeaderEndpoint.security(for: parsed)
            } catch let error as ConfigError {
                throw error
            } catch {
                throw ConfigError("inter.broker.listener.name=\(parsed.interBrokerListener.name): \(error)")
            }
        }
        for key in parsed.unknownKeys.sorted() {
            logger.warning("unknown config key ignored", metadata: ["key": "\(key)"])
        }
        return parsed
    }
}

/// The broker and its server as one ServiceLifecycle service: graceful shutdown stops accepting
/// connections, lets in-flight requests finish briefly, then closes the logs cleanly.
struct BrokerService: Service {
    let config: BrokerConfig
    let logger: Logger

    /// The Prometheus registry `/metrics` renders; the process's swift-metrics backend when
    /// `metrics.listener` is set (bootstrapped once, before the broker starts).
    let registry: PrometheusCollectorRegistry

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        // The metrics endpoint answers from the start: `/health` at once, `/ready` 503 while the
        // logs load and, in a cluster, until this broker is registered and leads what it should.
        let serving = Mutex<KafkaAPIs?>(nil)
        var metricsServer: MetricsServer? = nil
        if let listener = config.metricsListener {
            do {
                metricsServer = try await MetricsServer.start(host: listener.host, port: listener.port, group: group, logger: logger,
                                                              render: { registry.emitToBuffer() },
                                                              ready: { serving.withLock { $0 }?.isReady ?? false })
            } catch {
                try? await group.shutdownGracefully()
                throw error
            }
        }
        let started: (broker: Broker, store: EtcdMetadataStore?, server: KafkaServer)
        do {
            started = try await startBroker(group: group)
        } catch {
            await metricsServer?.stop()
            try? await group.shutdownGracefully()
            throw error
        }
        let (broker, store, server) = started
        serving.withLock { $0 = broker.apis }
        logger.info("fjord broker started", metadata: ["node.id": "\(config.nodeID)", "log.dirs": "\(config.logDirs.joined(separator: ","))"])
        // SIGHUP reloads the TLS listeners' certificates (a renewed certificate without a restart).
        let reloads = Task {
            for await _ in await UnixSignalsSequence(trapping: .sighup) { server.reloadCertificates() }
        }
        defer { reloads.cancel() }
        try? await gracefulShutdown()
        logger.info("shutting down")
        if let store {
            // Controlled shutdown: leaderships move to other ISR members before the broker stops.
            await store.controlledShutdown(maxWait: .milliseconds(config.controlledShutdownMaxWaitMs))
        }
        await server.stop()
        await metricsServer?.stop()
        // Give requests already being handled a moment to complete.
        try? await Task.sleep(for: .milliseconds(200))
        try await broker.shutdown()
        await store?.close()
        try? await group.shutdownGracefully()
        logger.info("stopped")
    }

    /// Opens the logs (joining the cluster first, when there is one) and starts the Kafka listeners.
    private func startBroker(group: MultiThreadedEventLoopGroup) async throws -> (broker: Broker, store: EtcdMetadataStore?, server: KafkaServer) {
        var store: EtcdMetadataStore? = nil
        let broker: Broker
        if let cluster = config.cluster {
            let address = try EtcdClusterAddress(parsing: cluster)
            let registration = config.registration
            let joined = try await EtcdMetadataStore.join(address, settings: .init(
                registration: registration, sessionTimeoutMs: config.brokerSessionTimeoutMs,
                uncleanLeaderElection: config.uncleanLeaderElectionEnable), logger: logger)
            store = joined
            do {
                broker = try await Broker.start(config: config, cluster: joined,
                                                leaderEndpoints: ClientLeaderEndpoint.factory(clientID: "fjord-replica-\(config.nodeID)",
                                                                                              listener: config.interBrokerListener.name,
                                                                                              security: try ClientLeaderEndpoint.security(for: config)),
                                                logger: logger)
            } catch {
                await joined.close()
                throw error
            }
        } else {
            broker = try await Broker.start(config: config, logger: logger)
        }
        do {
            return (broker, store, try await KafkaServer.start(broker: broker, group: group, logger: logger))
        } catch {
            try? await broker.shutdown()
            await store?.close()
            throw error
        }
    }
}
