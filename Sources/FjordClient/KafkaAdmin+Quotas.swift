public import FjordProtocol

// Client quotas (Kafka's Admin.describeClientQuotas / alterClientQuotas), sent to any broker.

extension KafkaAdmin {
    /// The quotas set on every entity matching the filter: for each component, a name (exact),
    /// `.defaultName`, or nil (any name, default included; KIP-546's SPECIFIED). `strict` keeps
    /// only entities with exactly the filtered components.
    public func describeClientQuotas(user: ClientQuotaEntity.Name?? = nil, clientID: ClientQuotaEntity.Name?? = nil,
                                     strict: Bool = false) async throws -> [ClientQuotaEntity: [String: Double]] {
        var request = DescribeClientQuotasRequest()
        request.strict = strict
        for (type, filter) in [(ClientQuotaEntity.userType, user), (ClientQuotaEntity.clientIDType, clientID)] {
            guard case .some(let name) = filter else { continue }
            var component = DescribeClientQuotasRequest.ComponentData()
            component.entityType = type
            switch name {
            case .named(let text)?: (component.matchType, component.match) = (0, text)
            case .defaultName?: (component.matchType, component.match) = (1, nil)
            case nil: (component.matchType, component.match) = (2, nil)
            }
            request.components.append(component)
        }
        let response = try await cluster.anyConnection().send(request)
        if response.errorCode != 0 { throw ClientError.kafka(KafkaError(code: response.errorCode), response.errorMessage) }
        var out: [ClientQuotaEntity: [String: Double]] = [:]
        for entry in response.entries ?? [] {
            var entity = ClientQuotaEntity()
            for component in entry.entity {
                let name = ClientQuotaEntity.Name(wire: component.entityName)
                if component.entityType == ClientQuotaEntity.userType { entity.user = name }
                if component.entityType == ClientQuotaEntity.clientIDType { entity.clientID = name }
            }
            out[entity] = Dictionary(entry.values.map { ($0.key, $0.value) }, uniquingKeysWith: { $1 })
        }
        return out
    }

    /// Sets (a value) or removes (nil) quota keys of `entity`.
    public func alterClientQuotas(_ entity: ClientQuotaEntity, _ values: [String: Double?], validateOnly: Bool = false) async throws {
        var entry = AlterClientQuotasRequest.EntryData()
        entry.entity = entity.components.map { component in
            var data = AlterClientQuotasRequest.EntityData()
            data.entityType = component.type
            data.entityName = component.name
            return data
        }
        entry.ops = values.keys.sorted().map { key in
            var op = AlterClientQuotasRequest.OpData()
            op.key = key
            if let value = values[key] ?? nil { op.value = value } else { op.remove = true }
            return op
        }
        var request = AlterClientQuotasRequest()
        request.entries = [entry]
        request.validateOnly = validateOnly
        let response = try await cluster.anyConnection().send(request)
        for result in response.entries where result.errorCode != 0 {
            throw ClientError.kafka(KafkaError(code: result.errorCode), result.errorMessage)
        }
    }
}
