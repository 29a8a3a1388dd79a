// Kafka's access control lists as values: what CreateAcls writes, DescribeAcls and DeleteAcls
// filter, and `StandardAuthorizer` matches. The integer codes are the wire codes of Kafka's
// `ResourceType`, `PatternType`, `AclOperation` and `AclPermissionType`.

/// The kind of resource an ACL protects (Kafka's `ResourceType`).
public enum AclResourceType: Int8, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case unknown = 0
    /// Filters only: any resource type.
    case any = 1
    case topic = 2
    case group = 3
    /// The cluster itself; its only resource name is `kafka-cluster`.
    case cluster = 4
    case transactionalID = 5
    case delegationToken = 6
    case user = 7

    /// The one name of the cluster resource.
    public static let clusterName = "kafka-cluster"

    public init(code: Int8) { self = AclResourceType(rawValue: code) ?? .unknown }

    public var description: String {
        switch self {
        case .unknown: return "Unknown"
        case .any: return "Any"
        case .topic: return "Topic"
        case .group: return "Group"
        case .cluster: return "Cluster"
        case .transactionalID: return "TransactionalId"
        case .delegationToken: return "DelegationToken"
        case .user: return "User"
        }
    }
}

/// How an ACL's resource name matches (Kafka's `PatternType`, KIP-290).
public enum AclPatternType: Int8, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case unknown = 0
    /// Filters only: literal or prefixed.
    case any = 1
    /// Filters only: every binding that would apply to the filter's literal name (literal equal,
    /// the `*` wildcard, or a prefix of it).
    case match = 2
    /// The name itself, or `*` for every resource of the type.
    case literal = 3
    /// Every resource whose name starts with the pattern's name.
    case prefixed = 4

    public init(code: Int8) { self = AclPatternType(rawValue: code) ?? .unknown }

    public var description: String {
        switch self {
        case .unknown: return "UNKNOWN"
        case .any: return "ANY"
        case .match: return "MATCH"
        case .literal: return "LITERAL"
        case .prefixed: return "PREFIXED"
        }
    }
}

/// What an ACL lets a principal do (Kafka's `AclOperation`).
public enum AclOperation: Int8, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case unknown = 0
    /// Filters only: any operation.
    case any = 1
    /// Every operation.
    case all = 2
    case read = 3
    case write = 4
    case create = 5
    case delete = 6
    case alter = 7
    case describe = 8
    case clusterAction = 9
    case describeConfigs = 10
    case alterConfigs = 11
    case idempotentWrite = 12
    case createTokens = 13
    case describeTokens = 14

    public init(code: Int8) { self = AclOperation(rawValue: code) ?? .unknown }

    /// Operations an ALLOW for `self` also grants, as Kafka's authorizer implies them: READ,
    /// WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS.
    public var implies: [AclOperation] {
        switch self {
        case .read, .write, .delete, .alter: return [.describe]
        case .alterConfigs: return [.describeConfigs]
        default: return []
        }
    }

    public var description: String {
        switch self {
        case .unknown: return "UNKNOWN"
        case .any: return "ANY"
        case .all: return "ALL"
        case .read: return "READ"
        case .write: return "WRITE"
        case .create: return "CREATE"
        case .delete: return "DELETE"
        case .alter: return "ALTER"
        case .describe: return "DESCRIBE"
        case .clusterAction: return "CLUSTER_ACTION"
        case .describeConfigs: return "DESCRIBE_CONFIGS"
        case .alterConfigs: return "ALTER_CONFIGS"
        case .idempotentWrite: return "IDEMPOTENT_WRITE"
        case .createTokens: return "CREATE_TOKENS"
        case .describeTokens: return "DESCRIBE_TOKENS"
        }
    }

    /// The operation named as kafka-acls.sh names it (`Read`, `describe-configs`, `IdempotentWrite`, …).
    public init?(name: String) {
        func folded(_ text: String) -> String { String(text.lowercased().filter { $0 != "-" && $0 != "_" }) }
        let key = folded(name)
        guard let match = AclOperation.allCases.first(where: { folded($0.description) == key }), match != .unknown else { return nil }
        self = match
    }
}

/// Whether an ACL allows or denies (Kafka's `AclPermissionType`). A matching DENY wins.
public enum AclPermissionType: Int8, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case unknown = 0
    /// Filters only.
    case any = 1
    case deny = 2
    case allow = 3

    public init(code: Int8) { self = AclPermissionType(rawValue: code) ?? .unknown }

    public var description: String {
        switch self {
        case .unknown: return "UNKNOWN"
        case .any: return "ANY"
        case .deny: return "DENY"
        case .allow: return "ALLOW"
        }
    }
}

/// One ACL: on resources of `resourceType` named by `resourceName` under `patternType`,
/// `principal` (`User:alice`, or `User:*` for every principal) from `host` (an address, or `*`)
/// is allowed or denied `operation`. A stored binding never holds a filter-only value (ANY,
/// MATCH, UNKNOWN): `validationError` says why one is refused.
public struct AclBinding: Sendable, Hashable, Codable, CustomStringConvertible {
    public var resourceType: AclResourceType
    public var resourceName: String
    public var patternType: AclPatternType
    public var principal: String
    public var host: String
    public var operation: AclOperation
    public var permission: AclPermissionType

    public init(resourceType: AclResourceType, resourceName: String, patternType: AclPatternType = .literal,
                principal: String, host: String = "*", operation: AclOperation, permission: AclPermissionType = .allow) {
        self.resourceType = resourceType
        self.resourceName = resourceName
        self.patternType = patternType
        self.principal = principal
        self.host = host
        self.operation = operation
        self.permission = permission
    }

    /// Why CreateAcls must refuse this binding (Kafka's INVALID_REQUEST cases), or nil.
    public var validationError: String? {
        switch resourceType {
        case .unknown, .any: return "Invalid resource type \(resourceType)"
        default: break
        }
        switch patternType {
        case .literal, .prefixed: break
        default: return "Invalid pattern type \(patternType)"
        }
        switch operation {
        case .unknown, .any: return "Invalid operation \(operation)"
        default: break
        }
        switch permission {
        case .allow, .deny: break
        default: return "Invalid permission type \(permission)"
        }
        if resourceName.isEmpty { return "Resource name must not be empty" }
        if resourceType == .cluster && resourceName != AclResourceType.clusterName {
            return "The only valid name for the CLUSTER resource is \(AclResourceType.clusterName)"
        }
        guard let colon = principal.firstIndex(of: ":"), colon != principal.startIndex, principal.index(after: colon) != principal.endIndex else {
            return "Invalid principal \(principal): expected TYPE:NAME such as User:alice"
        }
        if host.isEmpty { return "Host must not be empty (use * for any host)" }
        return nil
    }

    public var description: String {
        "(\(resourceType):\(patternType):\(resourceName), principal=\(principal), host=\(host), operation=\(operation), permission=\(permission))"
    }
}

/// DescribeAcls' and DeleteAcls' filter: nil strings and ANY types match everything; a MATCH
/// pattern matches every binding that applies to `resourceName` (literal equal, `*`, or a prefix
/// of it), as Kafka's `ResourcePatternFilter` does.
public struct AclBindingFilter: Sendable, Hashable {
    public var resourceType: AclResourceType
    public var resourceName: String?
    public var patternType: AclPatternType
    public var principal: String?
    public var host: String?
    public var operation: AclOperation
    public var permission: AclPermissionType

    public init(resourceType: AclResourceType = .any, resourceName: String? = nil, patternType: AclPatternType = .any,
                principal: String? = nil, host: String? = nil, operation: AclOperation = .any, permission: AclPermissionType = .any) {
        self.resourceType = resourceType
        self.resourceName = resourceName
        self.patternType = patternType
        self.principal = principal
        self.host = host
        self.operation = operation
        self.permission = permission
    }

    /// Matches every binding.
    public static let any = AclBindingFilter()

    /// Why the filter is refused (UNKNOWN values), or nil.
    public var validationError: String? {
        if resourceType == .unknown { return "Invalid resource type filter UNKNOWN" }
        if patternType == .unknown { return "Invalid pattern type filter UNKNOWN" }
        if operation == .unknown { return "Invalid operation filter UNKNOWN" }
        if permission == .unknown { return "Invalid permission type filter UNKNOWN" }
        return nil
    }

    public func matches(_ binding: AclBinding) -> Bool {
        if resourceType != .any && resourceType != binding.resourceType { return false }
        if operation != .any && operation != binding.operation { return false }
        if permission != .any && permission != binding.permission { return false }
        if let principal, principal != binding.principal { return false }
        if let host, host != binding.host { return false }
        switch patternType {
        case .any:
            if let resourceName, resourceName != binding.resourceName { return false }
        case .literal, .prefixed:
            if patternType != binding.patternType { return false }
            if let resourceName, resourceName != binding.resourceName { return false }
        case .match:
            guard let resourceName else { return true }
            switch binding.patternType {
            case .literal: return binding.resourceName == resourceName || binding.resourceName == "*"
            case .prefixed: return resourceName.hasPrefix(binding.resourceName)
            default: return false
            }
        case .unknown:
            return false
        }
        return true
    }
}
