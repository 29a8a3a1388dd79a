public import FjordProtocol

/// Kafka's `StandardAuthorizer` over one set of ACLs: decides whether a principal, connected
/// from a host, may perform an operation on a resource.
///
/// The rules, as Kafka's (`StandardAuthorizerData`):
/// - a super user (`super.users`) may do everything;
/// - a binding applies to a resource of its type when its pattern is LITERAL with the
///   resource's name or `*`, or PREFIXED with a prefix of the name; to a principal when it
///   names it or `User:*`; to a host when it names it or `*`;
/// - a DENY that applies, for the operation or ALL, refuses (deny wins over allow);
/// - else an ALLOW that applies, for the operation, ALL, or an operation that implies it
///   (READ/WRITE/DELETE/ALTER imply DESCRIBE, ALTER_CONFIGS implies DESCRIBE_CONFIGS), permits;
/// - else, when no binding at all exists for the resource (whoever it names),
///   `allow.everyone.if.no.acl.found` decides; otherwise it is refused.
///
/// A value: built once per metadata image (bindings indexed by resource type and literal name),
/// then read by any number of requests.
public struct StandardAuthorizer: Sendable {
    /// The bindings of one resource type: literal names, the literal wildcard, and prefixes.
    private struct Section: Sendable {
        var literal: [String: [AclBinding]] = [:]
        var wildcard: [AclBinding] = []
        var prefixed: [AclBinding] = []
    }

    private let sections: [AclResourceType: Section]
    public let superUsers: Set<String>
    public let allowEveryoneIfNoAclFound: Bool
    /// How many bindings the authorizer holds.
    public let count: Int

    public init(bindings: [AclBinding], superUsers: Set<String> = [], allowEveryoneIfNoAclFound: Bool = false) {
        var sections: [AclResourceType: Section] = [:]
        for binding in bindings {
            var section = sections[binding.resourceType] ?? Section()
            switch binding.patternType {
            case .literal where binding.resourceName == "*": section.wildcard.append(binding)
            case .literal: section.literal[binding.resourceName, default: []].append(binding)
            case .prefixed: section.prefixed.append(binding)
            default: continue
            }
            sections[binding.resourceType] = section
        }
        self.sections = sections
        self.superUsers = superUsers
        self.allowEveryoneIfNoAclFound = allowEveryoneIfNoAclFound
        self.count = bindings.count
    }

    /// Parses `super.users`: principals separated by semicolons (`User:admin;User:broker`).
    public static func superUsers(_ text: String) -> Set<String> {
        Set(text.split(separator: ";").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty })
    }

    /// Whether `principal` (`User:alice`) connected from `host` may do `operation` on the
    /// resource `name` of `type`.
    public func authorize(principal: String, host: String, operation: AclOperation, type: AclResourceType, name: String) -> Bool {
        if superUsers.contains(principal) { return true }
        guard let section = sections[type] else { return allowEveryoneIfNoAclFound }
        var found = false
        var allowed = false
        func consider(_ binding: AclBinding) -> Bool {  // false: denied, stop
            found = true
            guard binding.principal == principal || binding.principal == "User:*" else { return true }
            guard binding.host == "*" || binding.host == host else { return true }
            switch binding.permission {
            case .deny:
                if binding.operation == operation || binding.operation == .all { return false }
            case .allow:
                if binding.operation == operation || binding.operation == .all || binding.operation.implies.contains(operation) {
                    allowed = true
                }
            default:
                break
            }
            return true
        }
        for binding in section.literal[name] ?? [] where !consider(binding) { return false }
        for binding in section.wildcard where !consider(binding) { return false }
        for binding in section.prefixed where name.hasPrefix(binding.resourceName) {
            if !consider(binding) { return false }
        }
        if allowed { return true }
        return found ? false : allowEveryoneIfNoAclFound
    }

    /// Whether `principal` may do `operation` on at least one resource of `type` (Kafka's
    /// `authorizeByResourceType`, used where any topic will do, such as an idempotent producer's
    /// InitProducerId): a super user, an applying ALLOW not overridden by a literal-wildcard
    /// DENY, or no bindings of the type with `allow.everyone.if.no.acl.found`.
    public func authorizeAny(principal: String, host: String, operation: AclOperation, type: AclResourceType) -> Bool {
        if superUsers.contains(principal) { return true }
        guard let section = sections[type] else { return allowEveryoneIfNoAclFound }
        func applies(_ binding: AclBinding, _ permission: AclPermissionType) -> Bool {
            guard binding.permission == permission else { return false }
            guard binding.principal == principal || binding.principal == "User:*" else { return false }
            guard binding.host == "*" || binding.host == host else { return false }
            if binding.operation == operation || binding.operation == .all { return true }
            return permission == .allow && binding.operation.implies.contains(operation)
        }
        if section.wildcard.contains(where: { applies($0, .deny) }) { return false }
        let all = section.literal.values.joined() + section.wildcard + section.prefixed
        return all.contains { applies($0, .allow) }
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        var text = Substring(self)
        while text.first?.isWhitespace == true { text = text.dropFirst() }
        while text.last?.isWhitespace == true { text = text.dropLast() }
        return String(text)
    }
}
