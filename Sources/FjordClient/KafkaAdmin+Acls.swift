public import FjordProtocol

// Access control lists (Kafka's Admin.createAcls / describeAcls / deleteAcls), sent to any broker.

extension KafkaAdmin {
    /// Creates `bindings` (a binding already present stays once); throws the first refusal.
    public func createAcls(_ bindings: [AclBinding]) async throws {
        var request = CreateAclsRequest()
        request.creations = bindings.map { binding in
            var creation = CreateAclsRequest.AclCreation()
            creation.resourceType = binding.resourceType.rawValue
            creation.resourceName = binding.resourceName
            creation.resourcePatternType = binding.patternType.rawValue
            creation.principal = binding.principal
            creation.host = binding.host
            creation.operation = binding.operation.rawValue
            creation.permissionType = binding.permission.rawValue
            return creation
        }
        let response = try await cluster.anyConnection().send(request)
        for (result, binding) in zip(response.results, bindings) where result.errorCode != 0 {
            throw ClientError.kafka(KafkaError(code: result.errorCode), "\(binding): \(result.errorMessage ?? "")")
        }
    }

    /// The bindings matching `filter`.
    public func describeAcls(_ filter: AclBindingFilter = .any) async throws -> [AclBinding] {
        var request = DescribeAclsRequest()
        request.resourceTypeFilter = filter.resourceType.rawValue
        request.resourceNameFilter = filter.resourceName
        request.patternTypeFilter = filter.patternType.rawValue
        request.principalFilter = filter.principal
        request.hostFilter = filter.host
        request.operation = filter.operation.rawValue
        request.permissionType = filter.permission.rawValue
        let response = try await cluster.anyConnection().send(request)
        if response.errorCode != 0 { throw ClientError.kafka(KafkaError(code: response.errorCode), response.errorMessage) }
        return response.resources.flatMap { resource in
            resource.acls.map { acl in
                AclBinding(resourceType: AclResourceType(code: resource.resourceType), resourceName: resource.resourceName,
                           patternType: AclPatternType(code: resource.patternType), principal: acl.principal, host: acl.host,
                           operation: AclOperation(code: acl.operation), permission: AclPermissionType(code: acl.permissionType))
            }
        }
    }

    /// Deletes every binding matching any of `filters`; returns those deleted.
    @discardableResult
    public func deleteAcls(_ filters: [AclBindingFilter]) async throws -> [AclBinding] {
        var request = DeleteAclsRequest()
        request.filters = filters.map { filter in
            var entry = DeleteAclsRequest.DeleteAclsFilter()
            entry.resourceTypeFilter = filter.resourceType.rawValue
            entry.resourceNameFilter = filter.resourceName
            entry.patternTypeFilter = filter.patternType.rawValue
            entry.principalFilter = filter.principal
            entry.hostFilter = filter.host
            entry.operation = filter.operation.rawValue
            entry.permissionType = filter.permission.rawValue
            return entry
        }
        let response = try await cluster.anyConnection().send(request)
        var deleted: [AclBinding] = []
        for result in response.filterResults {
            if result.errorCode != 0 { throw ClientError.kafka(KafkaError(code: result.errorCode), result.errorMessage) }
            for acl in result.matchingAcls {
                deleted.append(AclBinding(resourceType: AclResourceType(code: acl.resourceType), resourceName: acl.resourceName,
                                          patternType: AclPatternType(code: acl.patternType), principal: acl.principal, host: acl.host,
                                          operation: AclOperation(code: acl.operation), permission: AclPermissionType(code: acl.permissionType)))
            }
        }
        return deleted
    }
}
