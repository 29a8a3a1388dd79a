import FjordMetadata
import FjordProtocol
import FjordStorage
import Logging
import NIOCore
import SystemPackage

/// Kafka's `ConfigResource.Type` codes.
enum ConfigResourceType: Int8 {
    case topic = 2
    case broker = 4
    case brokerLogger = 8
}

/// Kafka's `DescribeConfigsResponse.ConfigSource` codes.
enum ConfigSource: Int8 {
    case unknown = 0
    case dynamicTopicConfig = 1
    case dynamicBrokerConfig = 2
    case dynamicDefaultBrokerConfig = 3
    case staticBrokerConfig = 4
    case defaultConfig = 5
}

extension KafkaAPIs {
    // MARK: Topics

    func handleCreateTopics(_ request: CreateTopicsRequest, version: Int16, access: Access = .unrestricted) async -> CreateTopicsResponse {
        var response = CreateTopicsResponse()
        let config = self.config
        var seen = Set<String>()
        for topic in request.topics {
            var result = CreateTopicsResponse.CreatableTopicResult()
            result.name = topic.name
            result.numPartitions = -1
            result.replicationFactor = -1
            defer { response.topics.append(result) }
            guard seen.insert(topic.name).inserted else {
                result.errorCode = KafkaError.invalidRequest.code
                result.errorMessage = "Create topics request from client contains multiple entries for topic \(topic.name)"
                continue
            }
            guard access.allowsCluster(.create) || access.allows(.create, topic: topic.name) else {
                result.errorCode = KafkaError.topicAuthorizationFailed.code
                result.errorMessage = "Authorization failed."
                continue
            }
            var configs: [String: String] = [:]
            for entry in topic.configs { if let value = entry.value { configs[entry.name] = value } }
            if let problem = TopicConfigs.validate(configs) {
                result.errorCode = KafkaError.invalidConfig.code
                result.errorMessage = problem
                continue
            }
            var partitions = topic.numPartitions == -1 ? config.numPartitions : topic.numPartitions
            var replication = topic.replicationFactor == -1 ? config.defaultReplicationFactor : topic.replicationFactor
            if !topic.assignments.isEmpty {
                guard topic.numPartitions == -1 && topic.replicationFactor == -1 else {
                    result.errorCode = KafkaError.invalidRequest.code
                    result.errorMessage = "Both numPartitions or replicationFactor and replicasAssignments were set"
                    continue
                }
                guard topic.assignments.allSatisfy({ Set($0.brokerIds).count == $0.brokerIds.count }) else {
                    result.errorCode = KafkaError.invalidReplicaAssignment.code
                    result.errorMessage = "a partition's replica assignment lists a broker more than once"
                    continue
                }
                let brokers = Set(topic.assignments.flatMap(\.brokerIds))
                guard !clustered else {
                    result.errorCode = KafkaError.invalidReplicaAssignment.code
                    result.errorMessage = "explicit replica assignments are not supported in a cluster yet: give numPartitions and replicationFactor"
                    continue
                }
                guard brokers == [config.nodeID] else {
                    result.errorCode = KafkaError.invalidReplicaAssignment.code
                    result.errorMessage = "replica assignment names brokers \(brokers.sorted()) but this cluster has only broker \(config.nodeID)"
                    continue
                }
                partitions = Int32(topic.assignments.count)
                replication = Int16(topic.assignments[0].brokerIds.count)
            }
            guard partitions > 0 else {
                result.errorCode = KafkaError.invalidPartitions.code
                result.errorMessage = "Number of partitions must be larger than 0."
                continue
            }
            guard partitions <= config.maxPartitionsPerTopic else {
                result.errorCode = KafkaError.invalidPartitions.code
                result.errorMessage = "Number of partitions \(partitions) exceeds fjord.max.partitions.per.topic (\(config.maxPartitionsPerTopic))."
                continue
            }
            guard replication > 0 && Int(replication) <= Swift.max(1, metadata.image.brokers.count) else {
                result.errorCode = KafkaError.invalidReplicationFactor.code
                result.errorMessage = "Unable to replicate the partition \(replication) time(s): the number of brokers is \(Swift.max(1, metadata.image.brokers.count))."
                continue
            }
            do {
                try validateTopicName(topic.name)
            } catch {
                result.errorCode = error.kafkaError.code
                result.errorMessage = error.description
                continue
            }
            if request.validateOnly {
                if metadata.image.topics[topic.name] != nil {
                    result.errorCode = KafkaError.topicAlreadyExists.code
                    result.errorMessage = "Topic '\(topic.name)' already exists."
                    continue
                }
                result.numPartitions = partitions
                result.replicationFactor = replication
                result.configs = describeTopicConfigs(TopicMetadata(name: topic.name, topicID: .zero, partitionCount: partitions,
                                                                    replicationFactor: replication, configs: configs))
                continue
            }
            do {
                let created = try await metadata.createTopic(name: topic.name, partitions: partitions, replicationFactor: replication, configs: configs)
                try createLogs(for: created)
                logger.info("created topic", metadata: ["topic": "\(created.name)", "partitions": "\(partitions)", "id": "\(created.topicID)"])
                result.topicId = created.topicID
                result.numPartitions = partitions
                result.replicationFactor = replication
                result.configs = describeTopicConfigs(created)
            } catch let error as MetadataError {
                result.errorCode = error.kafkaError.code
                result.errorMessage = error.description
            } catch {
                result.errorCode = KafkaError.kafkaStorageError.code
                result.errorMessage = "\(error)"
            }
        }
        return response
    }

    /// The topic's configs as CreateTopics v5+ reports them.
    private func describeTopicConfigs(_ topic: TopicMetadata) -> [CreateTopicsResponse.CreatableTopicConfigs] {
        describeTopic(topic, keys: nil).map { entry in
            var config = CreateTopicsResponse.CreatableTopicConfigs()
            config.name = entry.name
            config.value = entry.value
            config.readOnly = entry.readOnly
            config.configSource = entry.configSource
            config.isSensitive = entry.isSensitive
            return config
        }
    }

    func handleDeleteTopics(_ request: DeleteTopicsRequest, version: Int16, access: Access = .unrestricted) async -> DeleteTopicsResponse {
        var response = DeleteTopicsResponse()
        let targets: [(String?, KafkaUUID)] = version >= 6 ? request.topics.map { ($0.name, $0.topicId) } : request.topicNames.map { ($0, .zero) }
        for (name, id) in targets {
            var result = DeleteTopicsResponse.DeletableTopicResult()
            result.name = name
            result.topicId = id
            defer { response.responses.append(result) }
            guard config.deleteTopicEnable else {
                result.errorCode = KafkaError.topicDeletionDisabled.code
                continue
            }
            let image = metadata.image
            guard let topic = name.flatMap({ image.topics[$0] }) ?? (id != .zero ? image.topic(id: id) : nil) else {
                result.errorCode = (name == nil ? KafkaError.unknownTopicId : KafkaError.unknownTopicOrPartition).code
                result.errorMessage = "This server does not host this topic"
                continue
            }
            guard access.allows(.delete, topic: topic.name) || access.allowsCluster(.delete) else {
                result.errorCode = KafkaError.topicAuthorizationFailed.code
                result.errorMessage = "Authorization failed."
                if name == nil { result.name = nil }
                continue
            }
            result.name = topic.name
            result.topicId = topic.topicID
            do {
                _ = try await metadata.deleteTopic(name: topic.name)
                try replicaManager.deletePartitions(topic: topic.name, nowMs: clock())
                logger.info("deleted topic", metadata: ["topic": "\(topic.name)"])
            } catch let error as MetadataError {
                result.errorCode = error.kafkaError.code
                result.errorMessage = error.description
            } catch {
                result.errorCode = KafkaError.kafkaStorageError.code
                result.errorMessage = "\(error)"
            }
        }
        return response
    }

    func handleCreatePartitions(_ request: CreatePartitionsRequest, access: Access = .unrestricted) async -> CreatePartitionsResponse {
        var response = CreatePartitionsResponse()
        for topic in request.topics {
            var result = CreatePartitionsResponse.CreatePartitionsTopicResult()
            result.name = topic.name
            defer { response.results.append(result) }
            guard access.allows(.alter, topic: topic.name) else {
                result.errorCode = KafkaError.topicAuthorizationFailed.code
                result.errorMessage = "Authorization failed."
                continue
            }
            guard let existing = metadata.image.topics[topic.name] else {
                result.errorCode = KafkaError.unknownTopicOrPartition.code
                result.errorMessage = "The topic '\(topic.name)' does not exist."
                continue
            }
            guard topic.count > existing.partitionCount else {
                result.errorCode = KafkaError.invalidPartitions.code
                result.errorMessage = "Topic currently has \(existing.partitionCount) partitions, which is higher than the requested \(topic.count)."
                continue
            }
            guard topic.count <= config.maxPartitionsPerTopic else {
                result.errorCode = KafkaError.invalidPartitions.code
                result.errorMessage = "Number of partitions \(topic.count) exceeds fjord.max.partitions.per.topic (\(config.maxPartitionsPerTopic))."
                continue
            }
            if let assignments = topic.assignments {
                guard !clustered, assignments.count == Int(topic.count - existing.partitionCount),
                    Set(assignments.flatMap(\.brokerIds)) == [config.nodeID]
                else {
                    result.errorCode = KafkaError.invalidReplicaAssignment.code
                    result.errorMessage = "assignments must name broker \(config.nodeID) for each new partition"
                    continue
                }
            }
            if request.validateOnly { continue }
            do {
                let updated = try await metadata.createPartitions(topic: topic.name, totalCount: topic.count)
                try createLogs(for: updated)
                logger.info("added partitions", metadata: ["topic": "\(topic.name)", "partitions": "\(topic.count)"])
            } catch let error as MetadataError {
                result.errorCode = error.kafkaError.code
                result.errorMessage = error.description
            } catch {
                result.errorCode = KafkaError.kafkaStorageError.code
                result.errorMessage = "\(error)"
            }
        }
        return response
    }

    // MARK: Configs

    struct ConfigEntry {
        var name: String
        var value: String?
        var readOnly: Bool
        var isDefault: Bool
        var configSource: Int8
        var isSensitive: Bool
        var type: ConfigType = .unknown
        var documentation: String = ""
        /// Where the value could come from, in precedence order, the effective one first
        /// (KIP-226's synonyms): the topic override, the dynamic broker default, the static
        /// broker config, the default.
        var synonyms: [(name: String, value: String?, source: ConfigSource)] = []
    }

    func describeTopic(_ topic: TopicMetadata, keys: Set<String>?) -> [ConfigEntry] {
        let effective = logConfig(for: topic)
        let dynamicBroker = metadata.image.brokerConfigs
        var entries: [ConfigEntry] = []
        for definition in TopicConfigs.definitions where keys == nil || keys!.contains(definition.name) {
            var synonyms: [(name: String, value: String?, source: ConfigSource)] = []
            if let value = topic.configs[definition.name] { synonyms.append((definition.name, value, .dynamicTopicConfig)) }
            if let key = definition.brokerKey {
                if let value = dynamicBroker[key] { synonyms.append((key, value, .dynamicDefaultBrokerConfig)) }
                if let value = config.raw[key] { synonyms.append((key, value, .staticBrokerConfig)) }
                synonyms.append((key, definition.defaultValue(LogConfig()), .defaultConfig))
            } else if synonyms.isEmpty {
                synonyms.append((definition.name, definition.defaultValue(LogConfig()), .defaultConfig))
            }
            if let value = topic.configs[definition.name] {
                entries.append(ConfigEntry(name: definition.name, value: value, readOnly: false, isDefault: false,
                                           configSource: ConfigSource.dynamicTopicConfig.rawValue, isSensitive: false,
                                           type: definition.type, documentation: definition.documentation))
            } else {
                let source: ConfigSource
                if let key = definition.brokerKey, dynamicBroker[key] != nil {
                    source = .dynamicDefaultBrokerConfig
                } else if let key = definition.brokerKey, config.raw[key] != nil {
                    source = .staticBrokerConfig
                } else {
                    source = .defaultConfig
                }
                entries.append(ConfigEntry(name: definition.name, value: definition.defaultValue(effective), readOnly: false,
                                           isDefault: source == .defaultConfig, configSource: source.rawValue, isSensitive: false,
                                           type: definition.type, documentation: definition.documentation))
            }
            entries[entries.count - 1].synonyms = synonyms
        }
        return entries
    }

    func describeBroker(keys: Set<String>?) -> [ConfigEntry] {
        let config = self.config
        let dynamic = metadata.image.brokerConfigs
        var values: [String: (String, ConfigSource)] = [:]
        let defaults = config.logConfig
        for definition in TopicConfigs.definitions {
            if let key = definition.brokerKey { values[key] = (definition.defaultValue(defaults), .defaultConfig) }
        }
        values["node.id"] = ("\(config.nodeID)", .staticBrokerConfig)
        values["broker.id"] = ("\(config.nodeID)", .staticBrokerConfig)
        values["listeners"] = (config.listeners.map(\.description).joined(separator: ","), .staticBrokerConfig)
        values["advertised.listeners"] = (config.advertisedEndpoints.map(\.description).joined(separator: ","), .staticBrokerConfig)
        values["log.dirs"] = (config.logDirs.joined(separator: ","), .staticBrokerConfig)
        values["num.partitions"] = ("\(config.numPartitions)", .defaultConfig)
        values["default.replication.factor"] = ("\(config.defaultReplicationFactor)", .defaultConfig)
        values["auto.create.topics.enable"] = ("\(config.autoCreateTopicsEnable)", .defaultConfig)
        values["socket.request.max.bytes"] = ("\(config.socketRequestMaxBytes)", .defaultConfig)
        for (key, value) in config.raw where values[key] != nil || key.hasPrefix("log.") { values[key] = (value, .staticBrokerConfig) }
        for (key, value) in dynamic { values[key] = (value, .dynamicDefaultBrokerConfig) }
        return values.keys.sorted().filter { keys == nil || keys!.contains($0) }.map { key in
            let (value, source) = values[key]!
            let described = BrokerConfigCatalog.describe(key)
            var synonyms: [(name: String, value: String?, source: ConfigSource)] = []
            if let value = dynamic[key] { synonyms.append((key, value, .dynamicDefaultBrokerConfig)) }
            if let value = config.raw[key] { synonyms.append((key, value, .staticBrokerConfig)) }
            if let topicKey = TopicConfigs.brokerKeyToTopicKey[key], let definition = TopicConfigs.byName[topicKey] {
                synonyms.append((key, definition.defaultValue(LogConfig()), .defaultConfig))
            } else if synonyms.isEmpty {
                synonyms.append((key, value, source))
            }
            return ConfigEntry(name: key, value: value, readOnly: TopicConfigs.brokerKeyToTopicKey[key] == nil,
                               isDefault: source == .defaultConfig, configSource: source.rawValue, isSensitive: false,
                               type: described.type, documentation: described.documentation, synonyms: synonyms)
        }
    }

    func handleDescribeConfigs(_ request: DescribeConfigsRequest, version: Int16, access: Access = .unrestricted) -> DescribeConfigsResponse {
        var response = DescribeConfigsResponse()
        for resource in request.resources {
            var result = DescribeConfigsResponse.DescribeConfigsResult()
            result.resourceType = resource.resourceType
            result.resourceName = resource.resourceName
            defer { response.results.append(result) }
            if let denied = Self.configAuthorization(resource.resourceType, resource.resourceName, .describeConfigs, access) {
                (result.errorCode, result.errorMessage) = (denied.code, "Authorization failed.")
                continue
            }
            let keys = resource.configurationKeys.map(Set.init)
            let entries: [ConfigEntry]
            switch ConfigResourceType(rawValue: resource.resourceType) {
            case .topic:
                guard let topic = metadata.image.topics[resource.resourceName] else {
                    result.errorCode = KafkaError.unknownTopicOrPartition.code
                    result.errorMessage = "Topic \(resource.resourceName) does not exist"
                    continue
                }
                entries = describeTopic(topic, keys: keys)
            case .broker:
                guard resource.resourceName.isEmpty || resource.resourceName == "\(config.nodeID)" else {
                    result.errorCode = KafkaError.invalidRequest.code
                    result.errorMessage = "Unexpected broker id \(resource.resourceName), expected \(config.nodeID) or empty"
                    continue
                }
                entries = describeBroker(keys: keys)
            default:
                result.errorCode = KafkaError.invalidRequest.code
                result.errorMessage = "Unsupported resource type \(resource.resourceType)"
                continue
            }
            result.configs = entries.map { entry in
                var config = DescribeConfigsResponse.DescribeConfigsResourceResult()
                config.name = entry.name
                config.value = entry.value
                config.readOnly = entry.readOnly
                if version == 0 { config.isDefault = entry.isDefault }  // v1+ reports configSource instead
                config.configSource = entry.configSource
                config.isSensitive = entry.isSensitive
                config.configType = entry.type.rawValue
                if request.includeSynonyms && version >= 1 {
                    config.synonyms = entry.synonyms.map { synonym in
                        var out = DescribeConfigsResponse.DescribeConfigsSynonym()
                        out.name = synonym.name
                        out.value = synonym.value
                        out.source = synonym.source.rawValue
                        return out
                    }
                }
                // Kafka sends null documentation unless it was asked for.
                config.documentation = request.includeDocumentation ? entry.documentation : nil
                return config
            }
        }
        return response
    }

    /// Applies topic config changes (after validation) and pushes the new config to the logs.
    private func alterTopic(_ name: String, set: [String: String], remove: [String], validateOnly: Bool) async throws -> Void {
        guard let topic = metadata.image.topics[name] else {
            throw MetadataError.unknownTopic("Topic \(name) does not exist")
        }
        var merged = topic.configs
        for key in remove { merged[key] = nil }
        for (key, value) in set { merged[key] = value }
        if let problem = TopicConfigs.validate(merged) { throw MetadataError.invalidConfig(problem) }
        for key in remove where TopicConfigs.byName[key] == nil { throw MetadataError.invalidConfig("Unknown topic config name: \(key)") }
        if validateOnly { return }
        var changes: [String: String?] = [:]
        for key in topic.configs.keys where merged[key] == nil { changes[key] = .some(nil) }
        for (key, value) in merged { changes[key] = .some(value) }
        let updated = try await metadata.alterTopicConfigs(topic: name, changes: changes)
        try replicaManager.updateConfig(topic: name, config: logConfig(for: updated))
        logger.info("altered topic config", metadata: ["topic": "\(name)", "configs": "\(updated.configs)"])
    }

    /// Applies dynamic broker (cluster-default) config changes: only `log.*`-style topic defaults.
    private func alterBroker(_ name: String, set: [String: String], remove: [String], validateOnly: Bool) async throws {
        guard name.isEmpty || name == "\(config.nodeID)" else {
            throw MetadataError.invalidConfig("Unexpected broker id \(name)")
        }
        var topicLevel: [String: String] = [:]
        for (key, value) in set {
            guard let topicKey = TopicConfigs.brokerKeyToTopicKey[key] else {
                throw MetadataError.invalidConfig("Cannot update broker config \(key) dynamically")
            }
            topicLevel[topicKey] = value
        }
        for key in remove where TopicConfigs.brokerKeyToTopicKey[key] == nil {
            throw MetadataError.invalidConfig("Cannot update broker config \(key) dynamically")
        }
        if let problem = TopicConfigs.validate(topicLevel) { throw MetadataError.invalidConfig(problem) }
        if validateOnly { return }
        var changes: [String: String?] = [:]
        for key in remove { changes[key] = .some(nil) }
        for (key, value) in set { changes[key] = .some(value) }
        try await metadata.alterBrokerConfigs(changes: changes)
        for topic in metadata.image.topics.values {
            try replicaManager.updateConfig(topic: topic.name, config: logConfig(for: topic))
        }
        logger.info("altered broker config", metadata: ["configs": "\(changes)"])
    }

    private func alterResult(_ error: any Error) -> (Int16, String) {
        if let error = error as? MetadataError { return (error.kafkaError.code, error.description) }
        return (KafkaError.unknownServerError.code, "\(error)")
    }

    func handleAlterConfigs(_ request: AlterConfigsRequest, access: Access = .unrestricted) async -> AlterConfigsResponse {
        var response = AlterConfigsResponse()
        for resource in request.resources {
            var result = AlterConfigsResponse.AlterConfigsResourceResponse()
            result.resourceType = resource.resourceType
            result.resourceName = resource.resourceName
            if let denied = Self.configAuthorization(resource.resourceType, resource.resourceName, .alterConfigs, access) {
                (result.errorCode, result.errorMessage) = (denied.code, "Authorization failed.")
                response.responses.append(result)
                continue
            }
            // AlterConfigs replaces the whole set: keys not given are removed.
            var set: [String: String] = [:]
            for entry in resource.configs { if let value = entry.value { set[entry.name] = value } }
            do {
                switch ConfigResourceType(rawValue: resource.resourceType) {
                case .topic:
                    let existing = metadata.image.topics[resource.resourceName]?.configs.keys.map { $0 } ?? []
                    try await alterTopic(resource.resourceName, set: set, remove: existing.filter { set[$0] == nil }, validateOnly: request.validateOnly)
                case .broker:
                    let existing = Array(metadata.image.brokerConfigs.keys)
                    try await alterBroker(resource.resourceName, set: set, remove: existing.filter { set[$0] == nil }, validateOnly: request.validateOnly)
                default:
                    throw MetadataError.invalidConfig("Unsupported resource type \(resource.resourceType)")
                }
            } catch {
                (result.errorCode, result.errorMessage) = alterResult(error)
            }
            response.responses.append(result)
        }
        return response
    }

    func handleIncrementalAlterConfigs(_ request: IncrementalAlterConfigsRequest, access: Access = .unrestricted) async -> IncrementalAlterConfigsResponse {
        var response = IncrementalAlterConfigsResponse()
        for resource in request.resources {
            var result = IncrementalAlterConfigsResponse.AlterConfigsResourceResponse()
            result.resourceType = resource.resourceType
            result.resourceName = resource.resourceName
            if let denied = Self.configAuthorization(resource.resourceType, resource.resourceName, .alterConfigs, access) {
                (result.errorCode, result.errorMessage) = (denied.code, "Authorization failed.")
                response.responses.append(result)
                continue
            }
            var set: [String: String] = [:]
            var remove: [String] = []
            var failure: String? = nil
            for entry in resource.configs {
                switch entry.configOperation {
                case 0:  // SET
                    guard let value = entry.value else { failure = "null value for SET of \(entry.name)"; break }
                    set[entry.name] = value
                case 1:  // DELETE
                    remove.append(entry.name)
                default:  // APPEND (2) / SUBTRACT (3) apply to list configs only
                    if entry.name == "cleanup.policy", let value = entry.value {
                        let current = metadata.image.topics[resource.resourceName]?.configs[entry.name] ?? "delete"
                        var parts = current.split(separator: ",").map(String.init)
                        if entry.configOperation == 2 { if !parts.contains(value) { parts.append(value) } } else { parts.removeAll { $0 == value } }
                        set[entry.name] = parts.joined(separator: ",")
                    } else {
                        failure = "operation \(entry.configOperation) is only valid for list configs; \(entry.name) is not one"
                    }
                }
            }
            do {
                if let failure { throw MetadataError.invalidConfig(failure) }
                switch ConfigResourceType(rawValue: resource.resourceType) {
                case .topic: try await alterTopic(resource.resourceName, set: set, remove: remove, validateOnly: request.validateOnly)
                case .broker: try await alterBroker(resource.resourceName, set: set, remove: remove, validateOnly: request.validateOnly)
                default: throw MetadataError.invalidConfig("Unsupported resource type \(resource.resourceType)")
                }
            } catch {
                (result.errorCode, result.errorMessage) = alterResult(error)
            }
            response.responses.append(result)
        }
        return response
    }

    // MARK: Records, cluster, producers, log dirs

    func handleDeleteRecords(_ request: DeleteRecordsRequest, access: Access = .unrestricted) -> DeleteRecordsResponse {
        var response = DeleteRecordsResponse()
        for topic in request.topics {
            var topicResult = DeleteRecordsResponse.DeleteRecordsTopicResult()
            topicResult.name = topic.name
            for target in topic.partitions {
                var result = DeleteRecordsResponse.DeleteRecordsPartitionResult()
                result.partitionIndex = target.partitionIndex
                result.lowWatermark = -1
                defer { topicResult.partitions.append(result) }
                guard access.allows(.delete, topic: topic.name) else {
                    result.errorCode = KafkaError.topicAuthorizationFailed.code
                    continue
                }
                let partition: Partition
                switch leaderPartition(TopicPartition(topic: topic.name, partition: target.partitionIndex), metadata.image) {
                case .success(let found): partition = found
                case .failure(let error):
                    result.errorCode = error.code
                    continue
                }
                // -1 means "up to the high watermark".
                let offset = target.offset == -1 ? partition.log.highWatermark.offset : Offset(target.offset)
                do {
                    let (start, _) = try partition.log.deleteRecords(before: offset)
                    result.lowWatermark = start.rawValue
                } catch {
                    result.errorCode = Self.kafkaError(error).code
                }
            }
            response.topics.append(topicResult)
        }
        return response
    }

    func handleDescribeCluster(_ request: DescribeClusterRequest, listener: String, access: Access = .unrestricted) -> DescribeClusterResponse {
        // As Kafka's broker: no check; DESCRIBE on the cluster only decides whether the
        // authorized operations are told (0 without it).
        var response = DescribeClusterResponse()
        let config = self.config
        let image = metadata.image
        response.clusterId = image.clusterID
        response.controllerId = clustered ? image.controllerID : config.nodeID
        response.endpointType = request.endpointType
        response.clusterAuthorizedOperations = Int32.min
        if request.includeClusterAuthorizedOperations {
            response.clusterAuthorizedOperations = access.allowsCluster(.describe)
                ? access.authorizedOperations(.cluster, AclResourceType.clusterName, among: Self.clusterOperations) : 0
        }
        response.brokers = liveBrokers(image, listener: listener).map(DescribeClusterResponse.DescribeClusterBroker.init)
        return response
    }

    /// InitProducerId. An idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE on
    /// some topic (KIP-679), else CLUSTER_AUTHORIZATION_FAILED.
    func handleInitProducerId(_ request: InitProducerIdRequest, access: Access = .unrestricted) async -> InitProducerIdResponse {
        var response = InitProducerIdResponse()
        response.producerId = -1
        response.producerEpoch = -1
        if let transactionalID = request.transactionalId, !access.allows(.write, .transactionalID, transactionalID) {
            response.errorCode = KafkaError.transactionalIdAuthorizationFailed.code
            return response
        }
        if request.transactionalId == nil && !access.allowsCluster(.idempotentWrite) && !access.allowsAny(.write, .topic) {
            response.errorCode = KafkaError.clusterAuthorizationFailed.code
            return response
        }
        if request.transactionalId != nil {
            // Transactions arrive with a later issue; a clear, fatal error until then.
            response.errorCode = KafkaError.invalidRequest.code
            return response
        }
        if request.producerId >= 0 && request.producerEpoch >= 0 {
            // KIP-360: an idempotent producer bumps its epoch to recover from a sequence error.
            if request.producerEpoch < Int16.max - 1 {
                response.producerId = request.producerId
                response.producerEpoch = request.producerEpoch + 1
                return response
            }
        }
        do {
            response.producerId = try await nextProducerID()
            response.producerEpoch = 0
        } catch {
            response.errorCode = KafkaError.coordinatorNotAvailable.code
        }
        return response
    }

    /// Hands out producer ids from blocks reserved in the metadata store (1,000 at a time).
    private func nextProducerID() async throws -> Int64 {
        if let id = takeProducerID() { return id }
        let block = try await metadata.allocateProducerIDs(count: 1000)
        installProducerIDs(block)
        guard let id = takeProducerID() else { throw MetadataError.persistenceFailed("empty producer id block") }
        return id
    }

    func handleDescribeProducers(_ request: DescribeProducersRequest, access: Access = .unrestricted) -> DescribeProducersResponse {
        var response = DescribeProducersResponse()
        for topic in request.topics {
            var topicResponse = DescribeProducersResponse.TopicResponse()
            topicResponse.name = topic.name
            for index in topic.partitionIndexes {
                var result = DescribeProducersResponse.PartitionResponse()
                result.partitionIndex = index
                defer { topicResponse.partitions.append(result) }
                guard access.allows(.read, topic: topic.name) else {
                    result.errorCode = KafkaError.topicAuthorizationFailed.code
                    continue
                }
                guard let partition = replicaManager.partition(TopicPartition(topic: topic.name, partition: index)) else {
                    result.errorCode = KafkaError.unknownTopicOrPartition.code
                    continue
                }
                result.activeProducers = partition.log.producers.map { entry in
                    var state = DescribeProducersResponse.ProducerState()
                    state.producerId = entry.producerID.rawValue
                    state.producerEpoch = Int32(entry.epoch)
                    state.lastSequence = entry.lastSequence
                    state.lastTimestamp = entry.lastTimestamp
                    state.coordinatorEpoch = entry.coordinatorEpoch
                    state.currentTxnStartOffset = entry.currentTransactionFirstOffset
                    return state
                }
            }
            response.topics.append(topicResponse)
        }
        return response
    }

    func handleDescribeLogDirs(_ request: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
        var response = DescribeLogDirsResponse()
        var result = DescribeLogDirsResponse.DescribeLogDirsResult()
        result.logDir = replicaManager.logManager.directory.string
        result.totalBytes = -1
        result.usableBytes = -1
        var byTopic: [String: [DescribeLogDirsResponse.DescribeLogDirsPartition]] = [:]
        let wanted: [String: Set<Int32>]? = request.topics.map { topics in
            Dictionary(topics.map { ($0.topic, Set($0.partitions)) }, uniquingKeysWith: { $0.union($1) })
        }
        for partition in replicaManager.allPartitions {
            let tp = partition.topicPartition
            if let wanted, wanted[tp.topic]?.contains(tp.partition) != true { continue }
            var entry = DescribeLogDirsResponse.DescribeLogDirsPartition()
            entry.partitionIndex = tp.partition
            entry.partitionSize = partition.log.sizeInBytes
            entry.offsetLag = 0
            byTopic[tp.topic, default: []].append(entry)
        }
        for (name, partitions) in byTopic.sorted(by: { $0.key < $1.key }) {
            var topic = DescribeLogDirsResponse.DescribeLogDirsTopic()
            topic.name = name
            topic.partitions = partitions
            result.topics.append(topic)
        }
        response.results = [result]
        return response
    }
}

// MARK: Leader elections and reassignments

extension KafkaAPIs {
    /// ElectLeaders (KIP-460): the controller elects the preferred or an unclean leader; other
    /// brokers answer NOT_CONTROLLER (clients send it to the controller).
    func handleElectLeaders(_ request: ElectLeadersRequest, version: Int16) async -> ElectLeadersResponse {
        var response = ElectLeadersResponse()
        let type: LeaderElectionType = version >= 1 && request.electionType == 1 ? .unclean : .preferred
        guard version >= 1 || request.electionType == 0, LeaderElectionType(rawValue: request.electionType) != nil else {
            response.errorCode = KafkaError.invalidRequest.code
            return response
        }
        let targets = request.topicPartitions.map { topics in
            topics.flatMap { topic in topic.partitions.map { TopicPartition(topic: topic.topic, partition: $0) } }
        }
        let results: [TopicPartition: (KafkaError, String?)]
        do {
            results = try await metadata.electLeaders(targets, type: type)
        } catch {
            response.errorCode = error.kafkaError.code
            if version == 0 {
                // v0 has no top-level error: every partition carries it.
                for tp in targets ?? [] {
                    var result = ElectLeadersResponse.PartitionResult()
                    result.partitionId = tp.partition
                    result.errorCode = error.kafkaError.code
                    result.errorMessage = error.description
                    if let index = response.replicaElectionResults.firstIndex(where: { $0.topic == tp.topic }) {
                        response.replicaElectionResults[index].partitionResult.append(result)
                    } else {
                        var topic = ElectLeadersResponse.ReplicaElectionResult()
                        topic.topic = tp.topic
                        topic.partitionResult = [result]
                        response.replicaElectionResults.append(topic)
                    }
                }
            }
            return response
        }
        var byTopic: [String: [ElectLeadersResponse.PartitionResult]] = [:]
        for (tp, (error, message)) in results.sorted(by: { $0.key < $1.key }) {
            // With a null topic list Kafka reports only the partitions it elected.
            if targets == nil && error != .noError { continue }
            var result = ElectLeadersResponse.PartitionResult()
            result.partitionId = tp.partition
            result.errorCode = error.code
            result.errorMessage = message
            byTopic[tp.topic, default: []].append(result)
        }
        response.replicaElectionResults = byTopic.keys.sorted().map { name in
            var topic = ElectLeadersResponse.ReplicaElectionResult()
            topic.topic = name
            topic.partitionResult = byTopic[name]!
            return topic
        }
        return response
    }

    /// AlterPartitionReassignments (KIP-455): starts or cancels (null replicas) partition moves
    /// on the controller. An added replica copies the partition from its leader and joins the
    /// ISR once caught up; the controller completes the move when every target is in the ISR.
    func handleAlterPartitionReassignments(_ request: AlterPartitionReassignmentsRequest) async -> AlterPartitionReassignmentsResponse {
        var response = AlterPartitionReassignmentsResponse()
        response.errorMessage = nil
        for topic in request.topics {
            var topicResponse = AlterPartitionReassignmentsResponse.ReassignableTopicResponse()
            topicResponse.name = topic.name
            for partition in topic.partitions {
                var result = AlterPartitionReassignmentsResponse.ReassignablePartitionResponse()
                result.partitionIndex = partition.partitionIndex
                result.errorMessage = nil
                do {
                    try await metadata.reassign(TopicPartition(topic: topic.name, partition: partition.partitionIndex), to: partition.replicas)
                } catch {
                    if case .notController = error {
                        response.errorCode = error.kafkaError.code
                        response.errorMessage = error.description
                    }
                    result.errorCode = error.kafkaError.code
                    result.errorMessage = error.description
                }
                topicResponse.partitions.append(result)
            }
            response.responses.append(topicResponse)
        }
        return response
    }

    /// ListPartitionReassignments: the reassignments in progress (all, or of the named partitions).
    func handleListPartitionReassignments(_ request: ListPartitionReassignmentsRequest) -> ListPartitionReassignmentsResponse {
        var response = ListPartitionReassignmentsResponse()
        response.errorMessage = nil
        let image = metadata.image
        if clustered && image.controllerID != config.nodeID {
            response.errorCode = KafkaError.notController.code
            response.errorMessage = "broker \(config.nodeID) is not the controller"
            return response
        }
        let wanted: [(String, [Int32])] = request.topics.map { $0.map { ($0.name, $0.partitionIndexes) } }
            ?? image.topics.values.sorted { $0.name < $1.name }.map { ($0.name, Array(0..<$0.partitionCount)) }
        for (name, indexes) in wanted {
            var topic = ListPartitionReassignmentsResponse.OngoingTopicReassignment()
            topic.name = name
            for index in indexes {
                guard let registration = image.partition(name, index),
                    registration.addingReplicas != nil || registration.removingReplicas != nil
                else { continue }
                var ongoing = ListPartitionReassignmentsResponse.OngoingPartitionReassignment()
                ongoing.partitionIndex = index
                ongoing.replicas = registration.replicas
                ongoing.addingReplicas = registration.addingReplicas ?? []
                ongoing.removingReplicas = registration.removingReplicas ?? []
                topic.partitions.append(ongoing)
            }
            if !topic.partitions.isEmpty { response.topics.append(topic) }
        }
        return response
    }
}
