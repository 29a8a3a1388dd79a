import ArgumentParser
import FjordClient
import FjordProtocol
import Foundation

/// `fjord acls add|remove|list`, as Kafka's kafka-acls.sh (same option names).
struct Acls: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Add, remove and list access control lists (enforced when the broker sets authorizer.class.name).",
        subcommands: [Add.self, Remove.self, List.self])

    /// The resources and pattern named on the command line.
    struct Resources: ParsableArguments {
        @Option(help: "A topic (repeatable; * for every topic).")
        var topic: [String] = []
        @Option(help: "A consumer group (repeatable; * for every group).")
        var group: [String] = []
        @Option(help: "A transactional id (repeatable).")
        var transactionalId: [String] = []
        @Flag(help: "The cluster resource (kafka-cluster).")
        var cluster = false
        @Option(help: "literal or prefixed (list and remove also take any and match).")
        var resourcePatternType: String = "literal"

        func pattern() throws -> AclPatternType {
            switch resourcePatternType.lowercased() {
            case "literal": return .literal
            case "prefixed": return .prefixed
            case "any": return .any
            case "match": return .match
            default: throw ValidationError("--resource-pattern-type: expected literal, prefixed, any or match")
            }
        }

        var named: [(AclResourceType, String)] {
            topic.map { (.topic, $0) } + group.map { (.group, $0) } + transactionalId.map { (.transactionalID, $0) }
                + (cluster ? [(.cluster, AclResourceType.clusterName)] : [])
        }
    }

    /// Who and what: principals, hosts and operations.
    struct Grant: ParsableArguments {
        @Option(help: "A principal to allow, User:NAME or User:* (repeatable).")
        var allowPrincipal: [String] = []
        @Option(help: "A principal to deny (repeatable).")
        var denyPrincipal: [String] = []
        @Option(help: "A host allow-principals are allowed from (repeatable; default *).")
        var allowHost: [String] = []
        @Option(help: "A host deny-principals are denied from (repeatable; default *).")
        var denyHost: [String] = []
        @Option(help: "Read, Write, Create, Delete, Alter, Describe, ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite, All (repeatable).")
        var operation: [String] = []
        @Flag(help: "A producer's ACLs: Write, Describe and Create on the topics (with --idempotent, IdempotentWrite on the cluster).")
        var producer = false
        @Flag(help: "With --producer: IdempotentWrite on the cluster.")
        var idempotent = false
        @Flag(help: "A consumer's ACLs: Read and Describe on the topics, Read on the group.")
        var consumer = false

        func operations() throws -> [AclOperation] {
            try operation.map { name in
                guard let op = AclOperation(name: name), op != .any else { throw ValidationError("--operation \(name): unknown operation") }
                return op
            }
        }

        /// The bindings for `resources`, as kafka-acls.sh builds them.
        func bindings(_ resources: Resources) throws -> [AclBinding] {
            let pattern = try resources.pattern()
            guard pattern == .literal || pattern == .prefixed else { throw ValidationError("add takes --resource-pattern-type literal or prefixed") }
            var perResource: [(AclResourceType, String, AclOperation)] = []
            let ops = try operations()
            for (type, name) in resources.named { for op in ops { perResource.append((type, name, op)) } }
            if producer {
                for name in resources.topic { for op in [AclOperation.write, .describe, .create] { perResource.append((.topic, name, op)) } }
                if idempotent { perResource.append((.cluster, AclResourceType.clusterName, .idempotentWrite)) }
            }
            if consumer {
                for name in resources.topic { for op in [AclOperation.read, .describe] { perResource.append((.topic, name, op)) } }
                for name in resources.group { perResource.append((.group, name, .read)) }
            }
            var out: [AclBinding] = []
            for (principals, hosts, permission) in [(allowPrincipal, allowHost, AclPermissionType.allow), (denyPrincipal, denyHost, .deny)] {
                for principal in principals {
                    for host in hosts.isEmpty ? ["*"] : hosts {
                        for (type, name, op) in perResource {
                            let binding = AclBinding(resourceType: type, resourceName: name,
                                                     patternType: type == .cluster ? .literal : pattern, principal: principal, host: host,
                                                     operation: op, permission: permission)
                            if let why = binding.validationError { throw ValidationError(why) }
                            if !out.contains(binding) { out.append(binding) }
                        }
                    }
                }
            }
            guard !out.isEmpty else {
                throw ValidationError("nothing to add: give --allow-principal or --deny-principal, a resource, and --operation, --producer or --consumer")
            }
            return out
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add ACLs.")
        @OptionGroup var client: ClientOptions
        @OptionGroup var resources: Resources
        @OptionGroup var grant: Grant

        func validate() throws { _ = try grant.bindings(resources) }

        func run() async throws {
            try await reportingErrors("acls add") {
                let bindings = try grant.bindings(resources)
                try await withAdmin(client) { try await $0.createAcls(bindings) }
                for binding in bindings { print("added \(Acls.line(binding))") }
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove ACLs: those the same options would add (or, with only resources, every ACL on them).")
        @OptionGroup var client: ClientOptions
        @OptionGroup var resources: Resources
        @OptionGroup var grant: Grant

        func run() async throws {
            try await reportingErrors("acls remove") {
                let filters: [AclBindingFilter]
                let onlyResources = grant.allowPrincipal.isEmpty && grant.denyPrincipal.isEmpty && grant.operation.isEmpty
                    && !grant.producer && !grant.consumer
                if onlyResources {
                    let pattern = try resources.pattern()
                    guard !resources.named.isEmpty else { throw CLIError("name a resource (--topic, --group, --transactional-id or --cluster)") }
                    filters = resources.named.map { AclBindingFilter(resourceType: $0.0, resourceName: $0.1, patternType: pattern) }
                } else {
                    filters = try grant.bindings(resources).map { binding in
                        AclBindingFilter(resourceType: binding.resourceType, resourceName: binding.resourceName, patternType: binding.patternType,
                                         principal: binding.principal, host: binding.host, operation: binding.operation,
                                         permission: binding.permission)
                    }
                }
                let removed = try await withAdmin(client) { try await $0.deleteAcls(filters) }
                for binding in removed { print("removed \(Acls.line(binding))") }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List ACLs (all, or those on the named resources).")
        @OptionGroup var client: ClientOptions
        @Option(help: "A topic.")
        var topic: String?
        @Option(help: "A consumer group.")
        var group: String?
        @Flag(help: "The cluster resource.")
        var cluster = false
        @Option(help: "Only this principal's.")
        var principal: String?
        @Option(help: "literal, prefixed, any (default) or match.")
        var resourcePatternType: String = "any"
        @Flag(help: "Print JSON.")
        var json = false

        func run() async throws {
            try await reportingErrors("acls list") {
                var resources = Resources()
                resources.resourcePatternType = resourcePatternType
                let pattern = try resources.pattern()
                var filter = AclBindingFilter(patternType: pattern, principal: principal)
                if let topic { (filter.resourceType, filter.resourceName) = (.topic, topic) }
                if let group { (filter.resourceType, filter.resourceName) = (.group, group) }
                if cluster { (filter.resourceType, filter.resourceName) = (.cluster, AclResourceType.clusterName) }
                let bindings = try await withAdmin(client) { try await $0.describeAcls(filter) }
                if json {
                    let objects: [[String: String]] = bindings.map { binding in
                        ["resourceType": binding.resourceType.description, "resourceName": binding.resourceName,
                         "patternType": binding.patternType.description, "principal": binding.principal, "host": binding.host,
                         "operation": binding.operation.description, "permission": binding.permission.description]
                    }
                    let data = try JSONSerialization.data(withJSONObject: objects, options: [.sortedKeys])
                    print(String(decoding: data, as: UTF8.self))
                    return
                }
                for binding in bindings { print(Acls.line(binding)) }
            }
        }
    }

    static func line(_ binding: AclBinding) -> String {
        "\(binding.resourceType):\(binding.patternType):\(binding.resourceName)\t\(binding.principal)\t\(binding.host)\t"
            + "\(binding.operation)\t\(binding.permission)"
    }
}
