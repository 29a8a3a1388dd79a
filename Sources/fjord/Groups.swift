import ArgumentParser
import FjordClient
import FjordProtocol
import Foundation

/// `fjord groups list|describe|reset-offsets|delete`, as Kafka's kafka-consumer-groups.sh.
struct Groups: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, describe (with lag), reset and delete consumer groups.",
        subcommands: [List.self, Describe.self, ResetOffsets.self, Delete.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List groups with their state.")
        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await reportingErrors("groups list") {
                let groups = try await withAdmin(client) { try await $0.listGroups() }
                for group in groups { print("\(group.groupID)\t\(group.state)\t\(group.protocolType)\t\(group.type)") }
            }
        }
    }

    /// One row of `describe`: a partition with its committed offset, end and owner.
    struct PartitionRow {
        var topic: String
        var partition: Int32
        var committed: Int64?
        var end: Int64
        var member: FjordClient.KafkaAdmin.GroupMemberDescription?

        var lag: Int64? { committed.map { Swift.max(0, end - $0) } }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a group's members, assignments and, per partition, committed offset, log end offset and lag.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The group.")
        var group: String
        @Flag(help: "Print JSON.")
        var json = false

        func run() async throws {
            try await reportingErrors("groups describe") {
                let (description, rows) = try await withAdmin(client) { admin in
                    let description = try await admin.describeGroup(group)
                    let committed = try await admin.listGroupOffsets(group).mapValues { $0.mapValues(\.rawValue) }
                    var owners: [TopicPartition: FjordClient.KafkaAdmin.GroupMemberDescription] = [:]
                    for member in description.members { for tp in member.assignment { owners[tp] = member } }
                    var partitions = Set(owners.keys)
                    for (topic, offsets) in committed { for partition in offsets.keys { partitions.insert(TopicPartition(topic, partition)) } }
                    var ends: [TopicPartition: Int64] = [:]
                    for (topic, indexes) in Dictionary(grouping: partitions, by: \.topic) {
                        for (partition, end) in try await admin.listOffsets(topic, partitions: indexes.map(\.partition), spec: .latest).mapValues(\.rawValue) {
                            ends[TopicPartition(topic, partition)] = end
                        }
                    }
                    let rows = partitions.sorted().map { tp in
                        PartitionRow(topic: tp.topic, partition: tp.partition,
                                     committed: committed[tp.topic]?[tp.partition].flatMap { $0 >= 0 ? $0 : nil },
                                     end: ends[tp] ?? -1, member: owners[tp])
                    }
                    return (description, rows)
                }
                if json {
                    let members = description.members.map { m in
                        "{\"member_id\":\(RecordRenderer.quoted(m.memberID)),\"instance_id\":\(m.instanceID.map(RecordRenderer.quoted) ?? "null"),"
                            + "\"client_id\":\(RecordRenderer.quoted(m.clientID)),\"host\":\(RecordRenderer.quoted(m.host)),"
                            + "\"assignment\":[\(m.assignment.map { "{\"topic\":\(RecordRenderer.quoted($0.topic)),\"partition\":\($0.partition)}" }.joined(separator: ","))]}"
                    }
                    let partitions = rows.map { r in
                        "{\"topic\":\(RecordRenderer.quoted(r.topic)),\"partition\":\(r.partition),"
                            + "\"current_offset\":\(r.committed.map(String.init) ?? "null"),\"log_end_offset\":\(r.end),"
                            + "\"lag\":\(r.lag.map(String.init) ?? "null"),\"member_id\":\(r.member.map { RecordRenderer.quoted($0.memberID) } ?? "null")}"
                    }
                    print("{\"group\":\(RecordRenderer.quoted(group)),\"state\":\(RecordRenderer.quoted(description.state)),"
                          + "\"protocol\":\(RecordRenderer.quoted(description.protocolName)),"
                          + "\"members\":[\(members.joined(separator: ","))],\"partitions\":[\(partitions.joined(separator: ","))]}")
                    return
                }
                print("Group \(group) is \(description.state)" + (description.protocolName.isEmpty ? "" : " (assignor \(description.protocolName))")
                      + " with \(description.members.count) member\(description.members.count == 1 ? "" : "s").\n")
                var table = [["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"]]
                for r in rows {
                    table.append([group, r.topic, String(r.partition), r.committed.map(String.init) ?? "-", String(r.end),
                                  r.lag.map(String.init) ?? "-", r.member?.memberID ?? "-", r.member?.host ?? "-", r.member?.clientID ?? "-"])
                }
                printTable(table)
            }
        }
    }

    struct ResetOffsets: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reset-offsets",
            abstract: "Move a group's committed offsets (the group must have no active members).",
            discussion: "Without --execute the plan is only printed (--dry-run), as in kafka-consumer-groups.sh.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The group.")
        var group: String
        @Option(help: ArgumentHelp("A topic, or topic:p1,p2 for some partitions (repeatable).", valueName: "topic[:partitions]"))
        var topic: [String] = []
        @Flag(help: "Every topic the group has committed offsets for.")
        var allTopics = false
        @Flag(help: "To the log start offset.") var toEarliest = false
        @Flag(help: "To the log end offset.") var toLatest = false
        @Option(help: "To the first offset at or after this ISO 8601 time.") var toDatetime: String?
        @Option(help: "To this offset (clamped to the log).") var toOffset: Int64?
        @Option(parsing: .unconditional, help: "Move the committed offset by this much, e.g. -10 (clamped to the log).") var shiftBy: Int64?
        @Flag(help: "Print the plan only (the default).") var dryRun = false
        @Flag(help: "Commit the plan.") var execute = false

        func validate() throws {
            let modes = [toEarliest, toLatest, toDatetime != nil, toOffset != nil, shiftBy != nil].filter { $0 }.count
            guard modes == 1 else {
                throw ValidationError("give exactly one of --to-earliest, --to-latest, --to-datetime, --to-offset, --shift-by")
            }
            guard topic.isEmpty != !allTopics else { throw ValidationError("give --topic (repeatable) or --all-topics") }
            guard !(dryRun && execute) else { throw ValidationError("--dry-run and --execute exclude each other") }
        }

        func run() async throws {
            try await reportingErrors("groups reset-offsets") {
                try await withAdmin(client) { admin in
                    let committed = try await admin.listGroupOffsets(group).mapValues { $0.mapValues(\.rawValue) }
                    var targets: [String: [Int32]] = [:]
                    if allTopics {
                        for (name, offsets) in committed { targets[name] = offsets.keys.sorted() }
                    } else {
                        for entry in topic {
                            let parts = entry.split(separator: ":", maxSplits: 1)
                            let name = String(parts[0])
                            if parts.count == 2 {
                                targets[name] = try parts[1].split(separator: ",").map { text in
                                    guard let index = Int32(text) else { throw CLIError("--topic \(entry): bad partition '\(text)'") }
                                    return index
                                }
                            } else {
                                guard let description = try await admin.describeTopics([name]).first else {
                                    throw CLIError("no topic \(name)")
                                }
                                targets[name] = description.partitions.map(\.partition)
                            }
                        }
                    }
                    var table = [["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"]]
                    var plan: [String: [Int32: Int64]] = [:]
                    for (name, partitions) in targets.sorted(by: { $0.key < $1.key }) {
                        let earliest = try await admin.listOffsets(name, partitions: partitions, spec: .earliest).mapValues(\.rawValue)
                        let latest = try await admin.listOffsets(name, partitions: partitions, spec: .latest).mapValues(\.rawValue)
                        var byTime: [Int32: Int64] = [:]
                        if let toDatetime {
                            byTime = try await admin.listOffsets(name, partitions: partitions, spec: .timestamp(try parseISO8601(toDatetime))).mapValues(\.rawValue)
                        }
                        for partition in partitions.sorted() {
                            let low = earliest[partition] ?? 0
                            let high = latest[partition] ?? 0
                            let current = committed[name]?[partition].flatMap { $0 >= 0 ? $0 : nil }
                            var target: Int64
                            if toEarliest { target = low }
                            else if toLatest { target = high }
                            else if toDatetime != nil { target = (byTime[partition] ?? -1) < 0 ? high : byTime[partition]! }
                            else if let toOffset { target = toOffset }
                            else { target = (current ?? low) + (shiftBy ?? 0) }
                            target = Swift.min(Swift.max(target, low), high)
                            plan[name, default: [:]][partition] = target
                            table.append([group, name, String(partition), current.map(String.init) ?? "-", String(target)])
                        }
                    }
                    printTable(table)
                    if execute {
                        for (name, offsets) in plan.sorted(by: { $0.key < $1.key }) {
                            do {
                                try await admin.alterGroupOffsets(group, topic: name, offsets: offsets.mapValues { Offset($0) })
                            } catch ClientError.kafka(.unknownMemberId, _) {
                                throw CLIError("group \(group) has active members: stop them before resetting its offsets")
                            }
                        }
                        print("\nCommitted the new offsets.")
                    } else {
                        print("\nDry run: nothing changed (add --execute to commit these offsets).")
                    }
                }
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete groups without members (and their offsets).")
        @OptionGroup var client: ClientOptions
        @Argument(help: "Groups.")
        var groups: [String]

        func run() async throws {
            try await reportingErrors("groups delete") {
                try await withAdmin(client) { try await $0.deleteGroups(groups) }
                for group in groups { print("Deleted group \(group).") }
            }
        }
    }
}

/// Prints rows as left-aligned columns separated by two spaces.
func printTable(_ rows: [[String]]) {
    guard let first = rows.first else { return }
    var widths = Array(repeating: 0, count: first.count)
    for row in rows { for (index, cell) in row.enumerated() { widths[index] = Swift.max(widths[index], cell.count) } }
    for row in rows {
        let line = row.enumerated().map { index, cell in
            index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
        print(line)
    }
}
