import FjordMetadata
import FjordProtocol
import Logging
import Synchronization

// Authorization (Kafka's AuthHelper over `StandardAuthorizer`) and the ACL APIs.
//
// With `authorizer.class.name` unset every request is allowed and no check costs more than a
// branch. With it set, each request's `Access` is its connection's principal (`User:ANONYMOUS`
// on listeners without SASL) and address, checked against the authorizer of the current
// metadata image, rebuilt once per image change.

/// What one request's principal may do. `allowsAll` when the broker has no authorizer.
struct Access: Sendable {
    let authorizer: StandardAuthorizer?
    let principal: String
    let host: String

    static let unrestricted = Access(authorizer: nil, principal: KafkaPrincipal.anonymous.description, host: "")

    var allowsAll: Bool { authorizer == nil }

    func allows(_ operation: AclOperation, _ type: AclResourceType, _ name: String) -> Bool {
        guard let authorizer else { return true }
        return authorizer.authorize(principal: principal, host: host, operation: operation, type: type, name: name)
    }

    func allows(_ operation: AclOperation, topic: String) -> Bool { allows(operation, .topic, topic) }
    func allows(_ operation: AclOperation, group: String) -> Bool { allows(operation, .group, group) }
    func allowsCluster(_ operation: AclOperation) -> Bool { allows(operation, .cluster, AclResourceType.clusterName) }
    func allowsAny(_ operation: AclOperation, _ type: AclResourceType) -> Bool {
        guard let authorizer else { return true }
        return authorizer.authorizeAny(principal: principal, host: host, operation: operation, type: type)
    }

    /// Kafka's authorized-operations bitfield for a resource (bit n set when operation code n is
    /// allowed), as Metadata and DescribeGroups report it on request.
    func authorizedOperations(_ type: AclResourceType, _ name: String, among operations: [AclOperation]) -> Int32 {
        var bits: Int32 = 0
        for operation in operations where allows(operation, type, name) { bits |= 1 << Int32(operation.rawValue) }
        return bits
    }
}

/// The authorizer of one metadata image.
struct AuthorizerCache: Sendable {
    var epoch: Int64 = -1
    var authorizer: StandardAuthorizer? = nil
}

extension KafkaAPIs {
    /// Operations Kafka lists in a topic's authorized operations.
    static let topicOperations: [AclOperation] = [.read, .write, .create, .delete, .alter, .describe, .describeConfigs, .alterConfigs]
    static let groupOperations: [AclOperation] = [.read, .describe, .delete]
    static let clusterOperations: [AclOperation] = [.create, .alter, .describe, .clusterAction, .describeConfigs, .alterConfigs, .idempotentWrite]

    /// The access of a request on `connection`.
    func access(_ connection: ClientConnection) -> Access {
        guard authorizerEnabled else { return .unrestricted }
        let image = metadata.image
        let authorizer = authorizerCache.withLock { cache -> StandardAuthorizer in
            if cache.epoch == image.epoch, let authorizer = cache.authorizer { return authorizer }
            let config = self.config
            let built = StandardAuthorizer(bindings: image.acls ?? [], superUsers: config.superUsers,
                                           allowEveryoneIfNoAclFound: config.allowEveryoneIfNoAclFound)
            cache = AuthorizerCache(epoch: image.epoch, authorizer: built)
            return built
        }
        var host = connection.clientHost
        if host.hasPrefix("/") { host.removeFirst() }
        return Access(authorizer: authorizer, principal: (connection.principal ?? .anonymous).description, host: host)
    }

    /// A config resource's check (DescribeConfigs, AlterConfigs): topics by name, brokers and
    /// their loggers through the cluster; the error when refused.
    static func configAuthorization(_ resourceType: Int8, _ name: String, _ operation: AclOperation, _ access: Access) -> KafkaError? {
        guard !access.allowsAll else { return nil }
        switch ConfigResourceType(rawValue: resourceType) {
        case .topic: return access.allows(operation, topic: name) ? nil : .topicAuthorizationFailed
        case .broker, .brokerLogger: return access.allowsCluster(operation) ? nil : .clusterAuthorizationFailed
        case nil: return nil
        }
    }

    /// An all-or-nothing check answered in the response's top-level error code.
    func denied<Response: KafkaTopLevelErrorResponse>(_: Response.Type, _ context: RequestContext, _ error: KafkaError) -> BrokerReply {
        encode(Response(topLevelError: error.code), context)
    }

    // MARK: CreateAcls, DescribeAcls, DeleteAcls

    func handleCreateAcls(_ request: CreateAclsRequest, _ access: Access) async -> CreateAclsResponse {
        var response = CreateAclsResponse()
        var results = [CreateAclsResponse.AclCreationResult](repeating: .init(), count: request.creations.count)
        for index in results.indices { results[index].errorMessage = nil }
        guard access.allowsCluster(.alter) else {
            for index in results.indices {
                results[index].errorCode = KafkaError.clusterAuthorizationFailed.code
                results[index].errorMessage = "Cluster authorization failed."
            }
            response.results = results
            return response
        }
        var valid: [(Int, AclBinding)] = []
        for (index, creation) in request.creations.enumerated() {
            let binding = AclBinding(resourceType: AclResourceType(code: creation.resourceType), resourceName: creation.resourceName,
                                     patternType: AclPatternType(code: creation.resourcePatternType), principal: creation.principal,
                                     host: creation.host, operation: AclOperation(code: creation.operation),
                                     permission: AclPermissionType(code: creation.permissionType))
            if let why = binding.validationError {
                results[index].errorCode = KafkaError.invalidRequest.code
                results[index].errorMessage = why
            } else {
                valid.append((index, binding))
            }
        }
        if !valid.isEmpty {
            do {
                try await metadata.createAcls(valid.map(\.1))
                logger.info("ACLs created", metadata: ["acls": "\(valid.map(\.1.description))", "by": "\(access.principal)"])
            } catch {
                for (index, _) in valid {
                    results[index].errorCode = error.kafkaError.code
                    results[index].errorMessage = error.description
                }
            }
        }
        response.results = results
        return response
    }

    /// DescribeAcls' and DeleteAcls' filter fields as a filter (v0 has no pattern type: LITERAL).
    static func aclFilter(_ type: Int8, _ name: String?, _ pattern: Int8, _ principal: String?, _ host: String?, _ operation: Int8,
                          _ permission: Int8, version: Int16) -> AclBindingFilter {
        AclBindingFilter(resourceType: AclResourceType(code: type), resourceName: name,
                         patternType: version == 0 ? .literal : AclPatternType(code: pattern), principal: principal, host: host,
                         operation: AclOperation(code: operation), permission: AclPermissionType(code: permission))
    }

    func handleDescribeAcls(_ request: DescribeAclsRequest, version: Int16, _ access: Access) -> DescribeAclsResponse {
        var response = DescribeAclsResponse()
        response.errorMessage = nil
        guard access.allowsCluster(.describe) else {
            response.errorCode = KafkaError.clusterAuthorizationFailed.code
            response.errorMessage = "Cluster authorization failed."
            return response
        }
        let filter = Self.aclFilter(request.resourceTypeFilter, request.resourceNameFilter, request.patternTypeFilter, request.principalFilter,
                                    request.hostFilter, request.operation, request.permissionType, version: version)
        if let why = filter.validationError {
            response.errorCode = KafkaError.invalidRequest.code
            response.errorMessage = why
            return response
        }
        var byResource: [String: Int] = [:]
        for binding in (metadata.image.acls ?? []) where filter.matches(binding) {
            let key = "\(binding.resourceType.rawValue)\u{0}\(binding.patternType.rawValue)\u{0}\(binding.resourceName)"
            var description = DescribeAclsResponse.AclDescription()
            description.principal = binding.principal
            description.host = binding.host
            description.operation = binding.operation.rawValue
            description.permissionType = binding.permission.rawValue
            if let index = byResource[key] {
                response.resources[index].acls.append(description)
            } else {
                var resource = DescribeAclsResponse.DescribeAclsResource()
                resource.resourceType = binding.resourceType.rawValue
                resource.resourceName = binding.resourceName
                resource.patternType = binding.patternType.rawValue
                resource.acls = [description]
                byResource[key] = response.resources.count
                response.resources.append(resource)
            }
        }
        return response
    }

    func handleDeleteAcls(_ request: DeleteAclsRequest, version: Int16, _ access: Access) async -> DeleteAclsResponse {
        var response = DeleteAclsResponse()
        var results = [DeleteAclsResponse.DeleteAclsFilterResult](repeating: .init(), count: request.filters.count)
        for index in results.indices { results[index].errorMessage = nil }
        guard access.allowsCluster(.alter) else {
            for index in results.indices {
                results[index].errorCode = KafkaError.clusterAuthorizationFailed.code
                results[index].errorMessage = "Cluster authorization failed."
            }
            response.filterResults = results
            return response
        }
        var filters: [(Int, AclBindingFilter)] = []
        for (index, entry) in request.filters.enumerated() {
            let filter = Self.aclFilter(entry.resourceTypeFilter, entry.resourceNameFilter, entry.patternTypeFilter, entry.principalFilter,
                                        entry.hostFilter, entry.operation, entry.permissionType, version: version)
            if let why = filter.validationError {
                results[index].errorCode = KafkaError.invalidRequest.code
                results[index].errorMessage = why
            } else {
                filters.append((index, filter))
            }
        }
        if !filters.isEmpty {
            do {
                let removed = try await metadata.deleteAcls(filters.map(\.1))
                for ((index, _), bindings) in zip(filters, removed) {
                    results[index].matchingAcls = bindings.map { binding in
                        var matching = DeleteAclsResponse.DeleteAclsMatchingAcl()
                        matching.errorMessage = nil
                        matching.resourceType = binding.resourceType.rawValue
                        matching.resourceName = binding.resourceName
                        matching.patternType = binding.patternType.rawValue
                        matching.principal = binding.principal
                        matching.host = binding.host
                        matching.operation = binding.operation.rawValue
                        matching.permissionType = binding.permission.rawValue
                        return matching
                    }
                }
                let count = removed.reduce(0) { $0 + $1.count }
                if count > 0 { logger.info("ACLs deleted", metadata: ["count": "\(count)", "by": "\(access.principal)"]) }
            } catch {
                for (index, _) in filters {
                    results[index].errorCode = error.kafkaError.code
                    results[index].errorMessage = error.description
                }
            }
        }
        response.filterResults = results
        return response
    }
}
