import ArgumentParser
import FjordClient
import FjordEventSourcing
import Foundation
import NIOCore

/// `fjord streams`: the streams of a `fjord.stream.versioning` topic, through the broker's
/// stream index (FjordReadStream) and expected-version appends.
struct Streams: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read, append to and create event streams (topics with fjord.stream.versioning=true).",
        subcommands: [Create.self, Read.self, Append.self, Version.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a stream topic (versioned streams, retention.ms=-1).")

        @OptionGroup var client: ClientOptions
        @Argument(help: "The topic.") var topic: String
        @Option(help: "Partitions (a stream's partition is its key's murmur2, as every Kafka client computes it).")
        var partitions: Int32 = 1

        func run() async throws {
            try await reportingErrors("streams create") {
                let store = try await EventStore.connect(try client.clientConfiguration(clientID: "fjord-cli-streams"), topic: topic,
                                                         createTopic: true, partitions: partitions)
                print("stream topic \(topic): \(store.partitionCount) partition(s)")
                await store.close()
            }
        }
    }

    struct Read: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a stream's events.",
            discussion: prose("""
                One line per event: "<revision> <type> <data>", or with --json one object per event
                (stream, revision, partition, offset, timestamp, id, type, data or data_base64, metadata).
                """))

        @OptionGroup var client: ClientOptions
        @Argument(help: "The stream topic.") var topic: String
        @Argument(help: "The stream (the records' key).") var stream: String
        @Option(help: "The first revision (backwards: -1, the default there, is the last event).") var from: Int64?
        @Flag(help: "Newest first.") var backwards = false
        @Option(help: "At most this many events.") var limit: Int = 1_000
        @Flag(help: "JSON lines.") var json = false

        func run() async throws {
            try await reportingErrors("streams read") {
                let store = try await EventStore.connect(try client.clientConfiguration(clientID: "fjord-cli-streams"), topic: topic,
                                                         createTopic: false)
                defer { Task { await store.close() } }
                let events = try await store.read(stream: stream, from: from ?? (backwards ? -1 : 0),
                                                  direction: backwards ? .backwards : .forwards, limit: limit)
                var output = OutputBuffer()
                for event in events {
                    output.write(json ? Self.json(event) : "\(event.revision) \(event.type) \(String(buffer: event.data))")
                    output.write("\n")
                }
                output.flush()
            }
        }

        static func json(_ event: RecordedEvent) -> String {
            let metadata = event.metadata.sorted { $0.key < $1.key }.map { "\(RecordRenderer.quoted($0.key)):\(RecordRenderer.quoted($0.value))" }
            return "{" + [
                "\"stream\":\(RecordRenderer.quoted(event.stream))", "\"revision\":\(event.revision)", "\"partition\":\(event.partition)",
                "\"offset\":\(event.offset)", "\"timestamp\":\(event.timestamp)", "\"id\":\(RecordRenderer.quoted(event.id))",
                "\"type\":\(RecordRenderer.quoted(event.type))", RecordRenderer.bytesField("data", event.data),
                "\"metadata\":{\(metadata.joined(separator: ","))}",
            ].joined(separator: ",") + "}"
        }
    }

    struct Append: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Append events to a stream, all or none, if it is at the expected version; prints the new version.",
            discussion: prose("""
                Each DATA argument is one event (or each line of stdin when there is none). A stream that
                moved on is refused: exit code 1 and "wrong expected version" with its actual version.
                """))

        @OptionGroup var client: ClientOptions
        @Argument(help: "The stream topic.") var topic: String
        @Argument(help: "The stream (the records' key).") var stream: String
        @Argument(help: "The events' data.") var data: [String] = []
        @Option(name: [.customShort("e"), .long], help: "any, no-stream, exists, or the stream's current version.")
        var expectedVersion: String = "any"
        @Option(name: [.customShort("t"), .long], help: "The events' type.") var type: String = "Event"
        @Option(help: ArgumentHelp("Metadata for every event (repeatable).", valueName: "key=value")) var metadata: [String] = []

        func validate() throws {
            _ = try expectation()
            for entry in metadata where !entry.contains("=") { throw ValidationError("--metadata \(entry): expected key=value") }
        }

        func expectation() throws -> ExpectedVersion {
            switch expectedVersion {
            case "any": return .any
            case "no-stream": return .noStream
            case "exists": return .exists
            default:
                guard let version = Int64(expectedVersion), version >= 0 else {
                    throw ValidationError("--expected-version \(expectedVersion): expected any, no-stream, exists or a version ≥ 0")
                }
                return .exact(version)
            }
        }

        func run() async throws {
            try await reportingErrors("streams append") {
                var values = data
                if values.isEmpty {
                    while let line = readLine() { values.append(line) }
                }
                guard !values.isEmpty else { throw CLIError("no events: give DATA arguments or lines on stdin") }
                var meta: [String: String] = [:]
                for entry in metadata {
                    let equals = entry.firstIndex(of: "=")!
                    meta[String(entry[..<equals])] = String(entry[entry.index(after: equals)...])
                }
                let events = values.map { EventData(type: type, data: ByteBuffer(string: $0), metadata: meta) }
                let store = try await EventStore.connect(try client.clientConfiguration(clientID: "fjord-cli-streams"), topic: topic,
                                                         createTopic: false)
                defer { Task { await store.close() } }
                print(try await store.append(to: stream, events, expectedVersion: try expectation()))
            }
        }
    }

    struct Version: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a stream's version (-1: no event).")

        @OptionGroup var client: ClientOptions
        @Argument(help: "The stream topic.") var topic: String
        @Argument(help: "The stream (the records' key).") var stream: String

        func run() async throws {
            try await reportingErrors("streams version") {
                let store = try await EventStore.connect(try client.clientConfiguration(clientID: "fjord-cli-streams"), topic: topic,
                                                         createTopic: false)
                defer { Task { await store.close() } }
                print(try await store.version(of: stream))
            }
        }
    }
}
