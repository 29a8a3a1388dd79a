import ArgumentParser
import FjordCDC
import Foundation
import Logging
import UnixSignals

/// `fjord cdc`: PostgreSQL changes into topics, as Debezium's PostgreSQL connector writes them.
struct CDC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cdc",
        abstract: "Capture a database's changes into topics (change data capture).",
        subcommands: [Postgres.self, Status.self]
    )

    /// What both subcommands name: the database, the connector and its properties.
    struct ConnectorOptions: ParsableArguments {
        @Option(help: ArgumentHelp("The database: postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require].",
                                   valueName: "url"))
        var url: String

        @Option(help: "Topic prefix: changes go to <prefix>.<schema>.<table>; also names the slot and publication (fjord_<prefix>).")
        var prefix: String

        @Option(name: .customLong("set"), help: ArgumentHelp(
            "A connector property, Debezium's name (repeatable): snapshot.mode, slot.name, publication.name, publication.autocreate.mode, "
                + "heartbeat.interval.ms, tombstones.on.delete, slot.drop.on.stop, decimal.handling.mode, "
                + "status.update.interval.ms, outbox.tables, offset.storage.topic.", valueName: "key=value"))
        var settings: [String] = []

        func configuration(tables: String?) throws -> PostgresConnectorConfiguration {
            var properties: [String: String] = [:]
            for setting in settings {
                guard let equals = setting.firstIndex(of: "=") else { throw CLIError("--set \(setting): expected key=value") }
                properties[String(setting[..<equals])] = String(setting[setting.index(after: equals)...])
            }
            let list = tables?.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            return try PostgresConnectorConfiguration(url: url, prefix: prefix, tables: list, properties: properties)
        }
    }

    struct Postgres: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stream a PostgreSQL database's changes into topics until SIGTERM or SIGINT.",
            discussion: prose("""
                Needs wal_level=logical and a user with REPLICATION (and SELECT on the tables). Creates the
                publication and the replication slot when missing, snapshots the tables once, then streams
                every committed change as a Debezium envelope; the slot advances only past changes the broker
                acknowledged (acks=all, idempotent), so a restart resumes without loss. The slot stays when
                the connector stops (slot.drop.on.stop=true drops it).
                """))

        @OptionGroup var connector: ConnectorOptions
        @Option(help: "Tables to capture, schema.table[,schema.table…] (default: every table of the database).")
        var tables: String?
        @OptionGroup var client: ClientOptions

        func run() async throws {
            let configuration: PostgresConnectorConfiguration
            do {
                configuration = try connector.configuration(tables: tables)
            } catch {
                FileHandle.standardError.write(Data("fjord cdc postgres: \(error)\n".utf8))
                throw ExitCode(1)
            }
            bootstrapLogging(defaultLevel: .info)
            let logger = Logger(label: "fjord.cdc")
            let connector = PostgresConnector(configuration: configuration, clientProperties: try client.clientProperties(), logger: logger)
            // SIGTERM/SIGINT: the connector flushes, confirms what the broker acknowledged and returns.
            let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
            let stopper = Task {
                for await _ in signals { connector.stop() }
            }
            defer { stopper.cancel() }
            do {
                try await connector.run()
            } catch {
                logger.error("stopped on an error", metadata: ["error": "\(error)"])
                FileHandle.standardError.write(Data("fjord cdc postgres: \(error)\n".utf8))
                throw ExitCode(1)
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a connector's slot, confirmed position, lag and throughput.")

        @OptionGroup var connector: ConnectorOptions
        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await reportingErrors("cdc status") {
                let configuration = try connector.configuration(tables: nil)
                let status = try await PostgresConnector.status(configuration, clientProperties: try client.clientProperties(),
                                                                logger: Logger(label: "fjord.cdc"))
                guard status.slotExists else {
                    print("slot \(status.slot): does not exist (the connector has not run, or dropped it)")
                    throw ExitCode(1)
                }
                print("slot:          \(status.slot) (\(status.active ? "active" : "inactive"))")
                print("confirmed LSN: \(status.confirmed)")
                print("lag:           \(status.lagBytes) bytes, \(String(format: "%.1f", status.lagSeconds)) s")
                if let state = status.state {
                    print("snapshot:      \(state.snapshotCompleted ? "completed" : "not completed")")
                    print("events:        \(state.events) (\(String(format: "%.1f", state.eventsPerSecond))/s)")
                    let age = Double(Int64(Date().timeIntervalSince1970 * 1000) - state.updatedAtMs) / 1000
                    print("state saved:   \(String(format: "%.0f", age)) s ago")
                } else {
                    print("state:         none saved in \(configuration.offsetsTopic)")
                }
            }
        }
    }
}
