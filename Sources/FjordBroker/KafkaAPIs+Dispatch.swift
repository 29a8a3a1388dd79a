public import FjordProtocol
import NIOCore

/// One request as a handler sees it: the parsed frame (header, version, correlation id) and
/// the connection it came on.
struct RequestContext: Sendable {
    let frame: RequestFrame
    let connection: ClientConnection
    /// What the connection's principal may do (everything without an authorizer).
    let access: Access
    /// Lets the connection start its next request before this one is answered (see
    /// `KafkaAPIs.handle`); nil when there is no connection to pipeline.
    var admitNext: (@Sendable () -> Void)? = nil
    var version: Int16 { frame.apiVersion }
    var clientHost: String { connection.clientHost }
    var listener: String { connection.listenerName }
}

/// How the broker serves one API: the versions it advertises in ApiVersions and the handler of
/// a frame of that API. The handler decodes the body as the API's own generated request type
/// (no existential, no cast), so an API is served exactly when it has an entry here.
struct APIHandler: Sendable {
    let versions: ClosedRange<Int16>
    let handle: @Sendable (KafkaAPIs, RequestContext) async -> BrokerReply

}

/// The dispatch table under construction: one `serve` per API.
struct APIHandlerTable {
    private(set) var handlers: [APIKey: APIHandler] = [:]

    /// Serves `Request`'s API key: decode the body as `Request`, then run `body`. A body that
    /// does not decode closes the connection (the frame is malformed), with its first bytes
    /// logged.
    mutating func serve<Request: KafkaRequest>(
        _: Request.Type, _ versions: ClosedRange<Int16>,
        _ body: @escaping @Sendable (KafkaAPIs, Request, RequestContext) async -> BrokerReply
    ) {
        precondition(handlers[Request.apiKey] == nil, "\(Request.apiKey.name) is served twice")
        handlers[Request.apiKey] = APIHandler(versions: versions) { apis, context in
            var bytes = context.frame.body
            let request: Request
            do {
                request = try Request(from: &bytes, version: context.version)
            } catch {
                let body = context.frame.body
                let prefix = body.getBytes(at: body.readerIndex, length: Swift.min(64, body.readableBytes)) ?? []
                let hex = prefix.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
                return .closeConnection(reason: "cannot decode \(Request.apiKey.name) v\(context.version): \(error) (body starts \(hex))")
            }
            return await body(apis, request, context)
        }
    }
}

extension KafkaAPIs {
    /// Every API the broker serves, by API key, with the versions it advertises. Ranges follow
    /// CLIENT-NOTES.md: Produce is advertised from v0 (librdkafka's compression check) while
    /// v0–2 are refused, as Kafka 4.0 does.
    static let handlers: [APIKey: APIHandler] = {
        var t = APIHandlerTable()
        // Cluster and topics
        t.serve(ApiVersionsRequest.self, 0...4) { apis, _, c in apis.encode(apis.apiVersionsResponse(error: .noError), c) }
        t.serve(MetadataRequest.self, 0...12) { apis, r, c in
            apis.encode(await apis.handleMetadata(r, version: c.version, listener: c.listener, access: c.access), c)
        }
        t.serve(DescribeClusterRequest.self, 0...1) { apis, r, c in
            apis.encode(apis.handleDescribeCluster(r, listener: c.listener, access: c.access), c)
        }
        t.serve(CreateTopicsRequest.self, 2...7) { apis, r, c in apis.encode(await apis.handleCreateTopics(r, version: c.version, access: c.access), c) }
        t.serve(DeleteTopicsRequest.self, 1...6) { apis, r, c in apis.encode(await apis.handleDeleteTopics(r, version: c.version, access: c.access), c) }
        t.serve(CreatePartitionsRequest.self, 0...3) { apis, r, c in apis.encode(await apis.handleCreatePartitions(r, access: c.access), c) }
        t.serve(DescribeConfigsRequest.self, 1...4) { apis, r, c in apis.encode(apis.handleDescribeConfigs(r, version: c.version, access: c.access), c) }
        t.serve(AlterConfigsRequest.self, 0...2) { apis, r, c in apis.encode(await apis.handleAlterConfigs(r, access: c.access), c) }
        t.serve(IncrementalAlterConfigsRequest.self, 0...1) { apis, r, c in
            apis.encode(await apis.handleIncrementalAlterConfigs(r, access: c.access), c)
        }
        t.serve(ElectLeadersRequest.self, 0...2) { apis, r, c in
            guard c.access.allowsCluster(.alter) else {
                // As Kafka: every named partition CLUSTER_AUTHORIZATION_FAILED, and the top level from v1.
                var response = ElectLeadersResponse()
                if c.version >= 1 { response.errorCode = KafkaError.clusterAuthorizationFailed.code }
                response.replicaElectionResults = (r.topicPartitions ?? []).map { topic in
                    var result = ElectLeadersResponse.ReplicaElectionResult()
                    result.topic = topic.topic
                    result.partitionResult = topic.partitions.map { index in
                        var partition = ElectLeadersResponse.PartitionResult()
                        partition.partitionId = index
                        partition.errorCode = KafkaError.clusterAuthorizationFailed.code
                        partition.errorMessage = "Cluster authorization failed."
                        return partition
                    }
                    return result
                }
                return apis.encode(response, c)
            }
            return apis.encode(await apis.handleElectLeaders(r, version: c.version), c)
        }
        t.serve(AlterPartitionReassignmentsRequest.self, 0...0) { apis, r, c in
            guard c.access.allowsCluster(.alter) else { return apis.denied(AlterPartitionReassignmentsResponse.self, c, .clusterAuthorizationFailed) }
            return apis.encode(await apis.handleAlterPartitionReassignments(r), c)
        }
        t.serve(ListPartitionReassignmentsRequest.self, 0...0) { apis, r, c in
            guard c.access.allowsCluster(.describe) else { return apis.denied(ListPartitionReassignmentsResponse.self, c, .clusterAuthorizationFailed) }
            return apis.encode(apis.handleListPartitionReassignments(r), c)
        }
        t.serve(DescribeLogDirsRequest.self, 1...4) { apis, r, c in
            guard c.access.allowsCluster(.describe) else {
                // From v3 the top-level error says so; before, the answer lists no log dirs.
                var response = DescribeLogDirsResponse()
                if c.version >= 3 { response.errorCode = KafkaError.clusterAuthorizationFailed.code }
                return apis.encode(response, c)
            }
            return apis.encode(apis.handleDescribeLogDirs(r), c)
        }
        // Data
        t.serve(ProduceRequest.self, 0...11) { apis, r, c in
            guard let response = await apis.handleProduce(r, version: c.version, listener: c.listener, access: c.access,
                                                          requestBytes: c.frame.body.readableBytes, admitNext: c.admitNext) else {
                return .noResponse
            }
            return apis.encode(response, c)
        }
        t.serve(FetchRequest.self, 4...17) { apis, r, c in
            await apis.handleFetch(r, request: c.frame, listener: c.listener, access: c.access)
        }
        // Client quotas
        t.serve(DescribeClientQuotasRequest.self, 0...1) { apis, r, c in apis.encode(apis.handleDescribeClientQuotas(r, c.access), c) }
        t.serve(AlterClientQuotasRequest.self, 0...1) { apis, r, c in apis.encode(await apis.handleAlterClientQuotas(r, c.access), c) }
        t.serve(ListOffsetsRequest.self, 1...10) { apis, r, c in apis.encode(apis.handleListOffsets(r, version: c.version, access: c.access), c) }
        t.serve(OffsetForLeaderEpochRequest.self, 2...4) { apis, r, c in apis.encode(apis.handleOffsetForLeaderEpoch(r, access: c.access), c) }
        t.serve(DeleteRecordsRequest.self, 0...2) { apis, r, c in apis.encode(apis.handleDeleteRecords(r, access: c.access), c) }
        t.serve(InitProducerIdRequest.self, 0...5) { apis, r, c in apis.encode(await apis.handleInitProducerId(r, access: c.access), c) }
        t.serve(DescribeProducersRequest.self, 0...0) { apis, r, c in apis.encode(apis.handleDescribeProducers(r, access: c.access), c) }
        // Classic groups and offsets: READ on the group to take part in it
        t.serve(FindCoordinatorRequest.self, 0...5) { apis, r, c in
            apis.encode(await apis.handleFindCoordinator(r, version: c.version, listener: c.listener, access: c.access), c)
        }
        t.serve(JoinGroupRequest.self, 0...9) { apis, r, c in
            guard c.access.allows(.read, group: r.groupId) else { return apis.denied(JoinGroupResponse.self, c, .groupAuthorizationFailed) }
            return apis.encode(await apis.handleJoinGroup(r, version: c.version, frame: c.frame, clientHost: c.clientHost), c)
        }
        t.serve(SyncGroupRequest.self, 0...5) { apis, r, c in
            guard c.access.allows(.read, group: r.groupId) else { return apis.denied(SyncGroupResponse.self, c, .groupAuthorizationFailed) }
            return apis.encode(await apis.handleSyncGroup(r, version: c.version), c)
        }
        t.serve(HeartbeatRequest.self, 0...4) { apis, r, c in
            guard c.access.allows(.read, group: r.groupId) else { return apis.denied(HeartbeatResponse.self, c, .groupAuthorizationFailed) }
            return apis.encode(await apis.handleHeartbeat(r), c)
        }
        t.serve(LeaveGroupRequest.self, 0...5) { apis, r, c in
            guard c.access.allows(.read, group: r.groupId) else { return apis.denied(LeaveGroupResponse.self, c, .groupAuthorizationFailed) }
            return apis.encode(await apis.handleLeaveGroup(r, version: c.version), c)
        }
        t.serve(OffsetCommitRequest.self, 2...9) { apis, r, c in apis.encode(await apis.handleOffsetCommit(r, version: c.version, access: c.access), c) }
        t.serve(OffsetFetchRequest.self, 1...9) { apis, r, c in apis.encode(await apis.handleOffsetFetch(r, version: c.version, access: c.access), c) }
        t.serve(OffsetDeleteRequest.self, 0...0) { apis, r, c in apis.encode(await apis.handleOffsetDelete(r, access: c.access), c) }
        t.serve(ListGroupsRequest.self, 0...5) { apis, r, c in apis.encode(await apis.handleListGroups(r, access: c.access), c) }
        t.serve(DescribeGroupsRequest.self, 0...5) { apis, r, c in apis.encode(await apis.handleDescribeGroups(r, access: c.access), c) }
        t.serve(DeleteGroupsRequest.self, 0...2) { apis, r, c in apis.encode(await apis.handleDeleteGroups(r, access: c.access), c) }
        // KIP-848 groups: READ on the group, DESCRIBE on the topics it subscribes to
        t.serve(ConsumerGroupHeartbeatRequest.self, 0...1) { apis, r, c in
            guard c.access.allows(.read, group: r.groupId) else {
                return apis.denied(ConsumerGroupHeartbeatResponse.self, c, .groupAuthorizationFailed)
            }
            if let topics = r.subscribedTopicNames, topics.contains(where: { !c.access.allows(.describe, topic: $0) }) {
                return apis.denied(ConsumerGroupHeartbeatResponse.self, c, .topicAuthorizationFailed)
            }
            if apis.notCoordinator(r.groupId) {
                var refused = ConsumerGroupHeartbeatResponse()
                refused.errorCode = KafkaError.notCoordinator.code
                refused.errorMessage = "this broker does not coordinate group \(r.groupId)"
                return apis.encode(refused, c)
            }
            return apis.encode(await apis.groupCoordinator.consumerHeartbeat(r, version: c.version, clientID: c.frame.header.clientId ?? "",
                                                                     clientHost: c.clientHost), c)
        }
        t.serve(ConsumerGroupDescribeRequest.self, 0...0) { apis, r, c in
            var response = ConsumerGroupDescribeResponse()
            for id in r.groupIds {
                guard c.access.allows(.describe, group: id) else {
                    var group = ConsumerGroupDescribeResponse.DescribedGroup()
                    group.groupId = id
                    group.errorCode = KafkaError.groupAuthorizationFailed.code
                    response.groups.append(group)
                    continue
                }
                response.groups.append(await apis.groupCoordinator.describeConsumerGroup(id))
            }
            return apis.encode(response, c)
        }
        // ACLs
        t.serve(CreateAclsRequest.self, 0...3) { apis, r, c in apis.encode(await apis.handleCreateAcls(r, c.access), c) }
        t.serve(DescribeAclsRequest.self, 0...3) { apis, r, c in apis.encode(apis.handleDescribeAcls(r, version: c.version, c.access), c) }
        t.serve(DeleteAclsRequest.self, 0...3) { apis, r, c in apis.encode(await apis.handleDeleteAcls(r, version: c.version, c.access), c) }
        // SASL and SCRAM credentials
        t.serve(SaslHandshakeRequest.self, 0...1) { apis, r, c in apis.handleSaslHandshake(r, c) }
        t.serve(SaslAuthenticateRequest.self, 0...2) { apis, r, c in await apis.handleSaslAuthenticate(r, c) }
        t.serve(DescribeUserScramCredentialsRequest.self, 0...0) { apis, r, c in
            guard c.access.allowsCluster(.describe) else { return apis.denied(DescribeUserScramCredentialsResponse.self, c, .clusterAuthorizationFailed) }
            return apis.encode(apis.handleDescribeUserScramCredentials(r), c)
        }
        t.serve(AlterUserScramCredentialsRequest.self, 0...0) { apis, r, c in
            guard c.access.allowsCluster(.alter) else {
                var response = AlterUserScramCredentialsResponse()
                let users = r.deletions.map(\.name) + r.upsertions.map(\.name)
                for user in users.enumerated().filter({ users.firstIndex(of: $0.element) == $0.offset }).map(\.element) {
                    var result = AlterUserScramCredentialsResponse.AlterUserScramCredentialsResult()
                    result.user = user
                    result.errorCode = KafkaError.clusterAuthorizationFailed.code
                    result.errorMessage = "Cluster authorization failed."
                    response.results.append(result)
                }
                return apis.encode(response, c)
            }
            return apis.encode(await apis.handleAlterUserScramCredentials(r), c)
        }
        // Fjord's stream reads
        t.serve(FjordReadStreamRequest.self, 0...1) { apis, r, c in
            guard c.access.allows(.read, topic: r.topic) else { return apis.denied(FjordReadStreamResponse.self, c, .topicAuthorizationFailed) }
            return apis.encode(apis.handleFjordReadStream(r), c)
        }
        t.serve(FjordStreamRevisionsRequest.self, 0...0) { apis, r, c in
            guard c.access.allows(.read, topic: r.topic) else { return apis.denied(FjordStreamRevisionsResponse.self, c, .topicAuthorizationFailed) }
            return apis.encode(apis.handleFjordStreamRevisions(r), c)
        }

        return t.handlers
    }()

    /// The versions each served API advertises in ApiVersions (from `handlers`).
    public static let supportedVersions: [APIKey: ClosedRange<Int16>] = handlers.mapValues(\.versions)

    /// Encodes a response to the request in `context`.
    func encode<Response: KafkaResponse>(_ response: Response, _ context: RequestContext) -> BrokerReply {
        encode(response, version: context.version, request: context.frame)
    }
}
