import ArgumentParser
import FjordClient
import FjordProtocol
import Foundation

/// `fjord topics list|describe|create|delete|alter-config|add-partitions`.
struct Topics: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, describe, create, delete and configure topics.",
        subcommands: [List.self, Describe.self, Create.self, Delete.self, AlterConfig.self, AddPartitions.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List topic names.")
        @OptionGroup var client: ClientOptions
        @Flag(name: .customLong("internal"), help: "Include internal topics (__consumer_offsets).")
        var includeInternal = false

        func run() async throws {
            try await reportingErrors("topics list") {
                let names = try await withAdmin(client) { try await $0.listTopics(includeInternal: includeInternal) }
                for name in names { print(name) }
            }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per partition: leader, replicas, ISR, log start and end offsets; and the topic's config overrides.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "Topics (default: all).")
        var topics: [String] = []
        @Flag(help: "Print JSON.")
        var json = false
        @Flag(help: "Only partitions whose ISR lacks some of their replicas (Kafka's --under-replicated-partitions).")
        var underReplicated = false
        @Flag(help: "Only partitions without a leader (Kafka's --unavailable-partitions).")
        var unavailable = false

        /// The partitions the filters keep.
        func shown(_ partition: PartitionDescription) -> Bool {
            if underReplicated && Set(partition.isr) == Set(partition.replicas) { return false }
            if unavailable && partition.leader >= 0 { return false }
            return true
        }

        func run() async throws {
            try await reportingErrors("topics describe") {
                try await withAdmin(client) { admin in try await describe(admin) }
            }
        }

        func describe(_ admin: KafkaAdmin) async throws {
                let described = try await admin.describeTopics(topics.isEmpty ? nil : topics).filter { !$0.isInternal || !topics.isEmpty }
                var documents: [String] = []
                for var topic in described.sorted(by: { $0.name < $1.name }) {
                    let filtered = underReplicated || unavailable
                    topic.partitions = topic.partitions.filter(shown)
                    if filtered && topic.partitions.isEmpty { continue }
                    // Offline partitions (no leader, in a cluster) have no offsets to tell: -1.
                    let indexes = topic.partitions.filter { $0.leader >= 0 }.map(\.partition)
                    let starts = try await admin.listOffsets(topic.name, partitions: indexes, spec: .earliest).mapValues(\.rawValue)
                    let ends = try await admin.listOffsets(topic.name, partitions: indexes, spec: .latest).mapValues(\.rawValue)
                    let configs = try await admin.describeTopicConfigs(topic.name)
                    if json {
                        let partitions = topic.partitions.map { p in
                            "{\"partition\":\(p.partition),\"leader\":\(p.leader),\"leader_epoch\":\(p.leaderEpoch),"
                                + "\"replicas\":[\(p.replicas.map(String.init).joined(separator: ","))],"
                                + "\"isr\":[\(p.isr.map(String.init).joined(separator: ","))],"
                                + "\"log_start_offset\":\(starts[p.partition] ?? -1),\"log_end_offset\":\(ends[p.partition] ?? -1)}"
                        }
                        let configText = configs.sorted { $0.key < $1.key }
                            .map { "\(RecordRenderer.quoted($0.key)):\(RecordRenderer.quoted($0.value))" }
                        documents.append("{\"topic\":\(RecordRenderer.quoted(topic.name)),\"topic_id\":\"\(topic.topicID)\","
                                         + "\"partitions\":[\(partitions.joined(separator: ","))],"
                                         + "\"configs\":{\(configText.joined(separator: ","))}}")
                    } else {
                        print("Topic: \(topic.name)\tTopicId: \(topic.topicID)\tPartitionCount: \(topic.partitions.count)"
                              + "\tReplicationFactor: \(topic.partitions.first?.replicas.count ?? 0)")
                        for p in topic.partitions {
                            print("\tPartition: \(p.partition)\tLeader: \(p.leader)\tReplicas: \(p.replicas.map(String.init).joined(separator: ","))"
                                  + "\tIsr: \(p.isr.map(String.init).joined(separator: ","))"
                                  + "\tLogStartOffset: \(starts[p.partition] ?? -1)\tLogEndOffset: \(ends[p.partition] ?? -1)")
                        }
                    }
                }
                if json { print("[\(documents.joined(separator: ","))]") }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a topic.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The topic's name.")
        var name: String
        @Option(help: "Partitions (default: the broker's num.partitions).")
        var partitions: Int32 = -1
        @Option(help: "Replication factor (default: the broker's default.replication.factor).")
        var replicationFactor: Int16 = -1
        @Option(help: ArgumentHelp("A topic config (repeatable).", valueName: "key=value"))
        var config: [String] = []
        @Flag(help: "Succeed if the topic exists already.")
        var ifNotExists = false

        func run() async throws {
            try await reportingErrors("topics create") {
                var configs: [String: String] = [:]
                for entry in config {
                    let (key, value) = try splitAssignment(entry, option: "--config")
                    configs[key] = value
                }
                try await withAdmin(client) { admin in
                    do {
                        try await admin.createTopic(name, partitions: partitions, replicationFactor: replicationFactor, configs: configs)
                        print("Created topic \(name).")
                    } catch ClientError.kafka(.topicAlreadyExists, _) where ifNotExists {
                        print("Topic \(name) exists.")
                    }
                }
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete topics.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "Topics.")
        var names: [String]

        func run() async throws {
            try await reportingErrors("topics delete") {
                try await withAdmin(client) { try await $0.deleteTopics(names) }
                for name in names { print("Deleted topic \(name).") }
            }
        }
    }

    struct AlterConfig: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "alter-config", abstract: "Set or remove topic config overrides.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The topic.")
        var name: String
        @Option(name: .customLong("set"), help: ArgumentHelp("Set an override (repeatable).", valueName: "key=value"))
        var set: [String] = []
        @Option(name: .customLong("delete"), help: ArgumentHelp("Remove an override (repeatable).", valueName: "key"))
        var delete: [String] = []

        func validate() throws {
            if set.isEmpty && delete.isEmpty { throw ValidationError("nothing to change: give --set or --delete") }
        }

        func run() async throws {
            try await reportingErrors("topics alter-config") {
                var changes: [String: String?] = [:]
                for entry in set {
                    let (key, value) = try splitAssignment(entry, option: "--set")
                    changes[key] = .some(value)
                }
                for key in delete { changes[key] = .some(nil) }
                try await withAdmin(client) { try await $0.alterTopicConfigs(name, changes) }
                print("Updated the config of \(name).")
            }
        }
    }

    struct AddPartitions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add-partitions", abstract: "Grow a topic to this many partitions.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The topic.")
        var name: String
        @Option(help: "The new total number of partitions.")
        var total: Int32

        func run() async throws {
            try await reportingErrors("topics add-partitions") {
                try await withAdmin(client) { try await $0.createPartitions(name, totalCount: total) }
                print("\(name) now has \(total) partitions.")
            }
        }
    }
}
