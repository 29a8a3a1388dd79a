import ArgumentParser
import FjordClient
import FjordProtocol
import Foundation

/// `fjord quotas alter|describe`, as Kafka's `kafka-configs.sh --entity-type users|clients`
/// (`--add-config producer_byte_rate=1048576`, `--entity-default`).
struct Quotas: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set, remove and show client quotas (producer_byte_rate, consumer_byte_rate, request_percentage) per user and client id.",
        subcommands: [Alter.self, Describe.self])

    /// The entity named on the command line.
    struct Entity: ParsableArguments {
        @Option(help: "A user (the principal's name).")
        var user: String?
        @Flag(help: "The default user (every user without a quota of its own).")
        var userDefault = false
        @Option(help: "A client id.")
        var clientId: String?
        @Flag(help: "The default client id.")
        var clientIdDefault = false

        func validate() throws {
            if user != nil && userDefault { throw ValidationError("give --user or --user-default, not both") }
            if clientId != nil && clientIdDefault { throw ValidationError("give --client-id or --client-id-default, not both") }
        }

        var userName: ClientQuotaEntity.Name? { user.map(ClientQuotaEntity.Name.named) ?? (userDefault ? .defaultName : nil) }
        var clientName: ClientQuotaEntity.Name? { clientId.map(ClientQuotaEntity.Name.named) ?? (clientIdDefault ? .defaultName : nil) }
        var entity: ClientQuotaEntity { ClientQuotaEntity(user: userName, clientID: clientName) }
    }

    struct Alter: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set (--add-config) or remove (--delete-config) an entity's quotas.")
        @OptionGroup var client: ClientOptions
        @OptionGroup var entity: Entity
        @Option(help: ArgumentHelp("Quotas to set, key=value[,key=value].", valueName: "key=value"))
        var addConfig: String?
        @Option(help: ArgumentHelp("Quota keys to remove, key[,key].", valueName: "key"))
        var deleteConfig: String?

        func validate() throws {
            guard entity.userName != nil || entity.clientName != nil else {
                throw ValidationError("name an entity: --user, --user-default, --client-id or --client-id-default")
            }
            guard addConfig != nil || deleteConfig != nil else { throw ValidationError("give --add-config and/or --delete-config") }
            _ = try values()
        }

        func values() throws -> [String: Double?] {
            var out: [String: Double?] = [:]
            for pair in (addConfig ?? "").split(separator: ",") {
                let parts = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                guard parts.count == 2, let value = Double(parts[1]) else { throw ValidationError("--add-config \(pair): expected key=number") }
                out[parts[0]] = value
            }
            for key in (deleteConfig ?? "").split(separator: ",") { out[key.trimmingCharacters(in: .whitespaces)] = .some(nil) }
            return out
        }

        func run() async throws {
            try await reportingErrors("quotas alter") {
                let values = try values()
                try await withAdmin(client) { try await $0.alterClientQuotas(entity.entity, values) }
                print("quotas of \(entity.entity) updated")
            }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the quotas set on entities (all, or those matching the options).")
        @OptionGroup var client: ClientOptions
        @OptionGroup var entity: Entity
        @Flag(help: "Print JSON.")
        var json = false

        func run() async throws {
            try await reportingErrors("quotas describe") {
                let found = try await withAdmin(client) { admin in
                    try await admin.describeClientQuotas(user: entity.userName.map { .some($0) } ?? nil,
                                                         clientID: entity.clientName.map { .some($0) } ?? nil)
                }
                let rows = found.sorted { $0.key.description < $1.key.description }
                if json {
                    let objects: [[String: Any]] = rows.map { entity, values in
                        var object: [String: Any] = ["values": values]
                        for component in entity.components { object[component.type] = component.name ?? NSNull() }
                        return object
                    }
                    let data = try JSONSerialization.data(withJSONObject: objects, options: [.sortedKeys])
                    print(String(decoding: data, as: UTF8.self))
                    return
                }
                for (entity, values) in rows {
                    print("\(entity)\t" + values.keys.sorted().map { "\($0)=\(values[$0]!)" }.joined(separator: ","))
                }
            }
        }
    }
}
