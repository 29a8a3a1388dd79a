import FjordMetadata
import FjordProtocol
import Testing

/// `StandardAuthorizer`'s rules as Kafka's `StandardAuthorizerData` states them.
struct StandardAuthorizerTests {
    static func allow(_ type: AclResourceType, _ name: String, _ pattern: AclPatternType = .literal, principal: String = "User:alice",
                      op: AclOperation, host: String = "*") -> AclBinding {
        AclBinding(resourceType: type, resourceName: name, patternType: pattern, principal: principal, host: host, operation: op,
                   permission: .allow)
    }

    static func deny(_ type: AclResourceType, _ name: String, _ pattern: AclPatternType = .literal, principal: String = "User:alice",
                     op: AclOperation) -> AclBinding {
        AclBinding(resourceType: type, resourceName: name, patternType: pattern, principal: principal, operation: op, permission: .deny)
    }

    @Test("literal, wildcard and prefixed patterns; principal and host must apply")
    func patterns() {
        let authorizer = StandardAuthorizer(bindings: [
            Self.allow(.topic, "orders", op: .read),
            Self.allow(.topic, "*", principal: "User:bob", op: .write),
            Self.allow(.topic, "pay-", .prefixed, op: .write),
            Self.allow(.group, "g", principal: "User:*", op: .read, host: "10.0.0.1"),
        ])
        #expect(authorizer.authorize(principal: "User:alice", host: "1.2.3.4", operation: .read, type: .topic, name: "orders"))
        #expect(!authorizer.authorize(principal: "User:alice", host: "1.2.3.4", operation: .read, type: .topic, name: "orders2"))
        #expect(!authorizer.authorize(principal: "User:carol", host: "1.2.3.4", operation: .read, type: .topic, name: "orders"))
        #expect(authorizer.authorize(principal: "User:bob", host: "h", operation: .write, type: .topic, name: "anything"))
        #expect(authorizer.authorize(principal: "User:alice", host: "h", operation: .write, type: .topic, name: "pay-eu"))
        #expect(!authorizer.authorize(principal: "User:alice", host: "h", operation: .write, type: .topic, name: "pa"))
        #expect(authorizer.authorize(principal: "User:zed", host: "10.0.0.1", operation: .read, type: .group, name: "g"))
        #expect(!authorizer.authorize(principal: "User:zed", host: "10.0.0.2", operation: .read, type: .group, name: "g"))
        // A resource type with no bindings at all.
        #expect(!authorizer.authorize(principal: "User:alice", host: "h", operation: .alter, type: .cluster, name: "kafka-cluster"))
    }

    @Test("DENY wins; READ/WRITE/DELETE/ALTER imply DESCRIBE, ALTER_CONFIGS implies DESCRIBE_CONFIGS; a DENY READ does not deny DESCRIBE")
    func denyAndImplication() {
        let authorizer = StandardAuthorizer(bindings: [
            Self.allow(.topic, "t", op: .all),
            Self.deny(.topic, "t", principal: "User:*", op: .write),
            Self.allow(.topic, "u", op: .read),
            Self.deny(.topic, "u", op: .read),
            Self.allow(.topic, "v", op: .alterConfigs),
        ])
        #expect(authorizer.authorize(principal: "User:alice", host: "h", operation: .read, type: .topic, name: "t"))
        #expect(!authorizer.authorize(principal: "User:alice", host: "h", operation: .write, type: .topic, name: "t"))
        #expect(!authorizer.authorize(principal: "User:alice", host: "h", operation: .read, type: .topic, name: "u"))
        #expect(authorizer.authorize(principal: "User:alice", host: "h", operation: .describe, type: .topic, name: "u"))
        #expect(authorizer.authorize(principal: "User:alice", host: "h", operation: .describeConfigs, type: .topic, name: "v"))
        #expect(!authorizer.authorize(principal: "User:alice", host: "h", operation: .describe, type: .topic, name: "v"))
    }

    @Test("super users pass every check; allow.everyone.if.no.acl.found applies only where no binding names the resource")
    func superUsersAndDefault() {
        let authorizer = StandardAuthorizer(bindings: [Self.allow(.topic, "owned", principal: "User:bob", op: .read)],
                                            superUsers: StandardAuthorizer.superUsers(" User:admin ; User:broker"),
                                            allowEveryoneIfNoAclFound: true)
        #expect(authorizer.superUsers == ["User:admin", "User:broker"])
        #expect(authorizer.authorize(principal: "User:admin", host: "h", operation: .alter, type: .cluster, name: "kafka-cluster"))
        #expect(authorizer.authorize(principal: "User:alice", host: "h", operation: .write, type: .topic, name: "free"))
        #expect(!authorizer.authorize(principal: "User:alice", host: "h", operation: .read, type: .topic, name: "owned"))
        #expect(authorizer.authorize(principal: "User:bob", host: "h", operation: .read, type: .topic, name: "owned"))
    }

    @Test("any topic will do for an idempotent producer, unless a wildcard DENY covers every topic")
    func authorizeAny() {
        var authorizer = StandardAuthorizer(bindings: [Self.allow(.topic, "x-", .prefixed, op: .write)])
        #expect(authorizer.authorizeAny(principal: "User:alice", host: "h", operation: .write, type: .topic))
        #expect(!authorizer.authorizeAny(principal: "User:bob", host: "h", operation: .write, type: .topic))
        authorizer = StandardAuthorizer(bindings: [Self.allow(.topic, "x", op: .write), Self.deny(.topic, "*", op: .write)])
        #expect(!authorizer.authorizeAny(principal: "User:alice", host: "h", operation: .write, type: .topic))
    }

    @Test("filters: ANY, exact, and MATCH as Kafka's ResourcePatternFilter")
    func filters() {
        let literal = Self.allow(.topic, "orders", op: .read)
        let wildcard = Self.allow(.topic, "*", op: .read)
        let prefixed = Self.allow(.topic, "ord", .prefixed, op: .read)
        let group = Self.allow(.group, "orders", op: .read)
        let all = [literal, wildcard, prefixed, group]
        #expect(all.filter(AclBindingFilter.any.matches) == all)
        #expect(all.filter(AclBindingFilter(resourceType: .topic, resourceName: "orders", patternType: .match).matches)
            == [literal, wildcard, prefixed])
        #expect(all.filter(AclBindingFilter(resourceName: "orders").matches) == [literal, group])
        #expect(all.filter(AclBindingFilter(patternType: .prefixed).matches) == [prefixed])
        #expect(all.filter(AclBindingFilter(principal: "User:bob").matches).isEmpty)
    }

    @Test("bindings CreateAcls refuses")
    func validation() {
        #expect(Self.allow(.topic, "t", op: .read).validationError == nil)
        #expect(Self.allow(.cluster, "other", op: .alter).validationError != nil)
        #expect(Self.allow(.any, "t", op: .read).validationError != nil)
        #expect(Self.allow(.topic, "t", .match, op: .read).validationError != nil)
        #expect(Self.allow(.topic, "t", op: .any).validationError != nil)
        #expect(Self.allow(.topic, "t", principal: "alice", op: .read).validationError != nil)
        #expect(AclOperation(name: "describe-configs") == .describeConfigs)
        #expect(AclOperation(name: "IdempotentWrite") == .idempotentWrite)
    }
}
