public import FjordProtocol
import NIOCore

/// One request as a handler sees it: the parsed frame (header, version, correlation id) and
/// the connection it came on.
struct RequestContext: Sendable {
    let frame: RequestFrame
    let connection: ClientConnection
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
        t.serve(MetadataRequest.self, 0...12) { apis, r, c in apis.encode(await apis.handleMetadata(r, version: c.version, listener: c.listener), c) }
        t.serve(DescribeClusterRequest.self, 0...1) { apis, r, c in apis.encode(apis.handleDescribeCluster(r, listener: c.listener), c) }
        t.serve(CreateTopicsRequest.self, 2...7) { apis, r, c in apis.encode(await apis.handleCreateTopics(r, version: c.version), c) }
        t.serve(DeleteTopicsRequest.self, 1...6) { apis, r, c in apis.encode(await apis.handleDeleteTopics(r, version: c.version), c) }
        t.serve(CreatePartitionsRequest.self, 0...3) { apis, r, c in apis.encode(await apis.handleCreatePartitions(r), c) }
        t.serve(DescribeConfigsRequest.self, 1...4) { apis, r, c in apis.encode(apis.handleDescribeConfigs(r, version: c.version), c) }
        t.serve(AlterConfigsRequest.self, 0...2) { apis, r, c in apis.encode(await apis.handleAlterConfigs(r), c) }
        t.serve(IncrementalAlterConfigsRequest.self, 0...1) { apis, r, c in apis.encode(await apis.handleIncrementalAlterConfigs(r), c) }
        t.serve(ElectLeadersRequest.self, 0...2) { apis, r, c in apis.encode(await apis.handleElectLeaders(r, version: c.version), c) }
        t.serve(AlterPartitionReassignmentsRequest.self, 0...0) { apis, r, c in
            apis.encode(await apis.handleAlterPartitionReassignments(r), c)
        }
        t.serve(ListPartitionReassignmentsRequest.self, 0...0) { apis, r, c in apis.encode(apis.handleListPartitionReassignments(r), c) }
        t.serve(DescribeLogDirsRequest.self, 1...4) { apis, r, c in apis.encode(apis.handleDescribeLogDirs(r), c) }
        // Data
        t.serve(ProduceRequest.self, 0...11) { apis, r, c in
            guard let response = await apis.handleProduce(r, version: c.version, listener: c.listener) else { return .noResponse }
            return apis.encode(response, c)
        }
        t.serve(FetchRequest.self, 4...17) { apis, r, c in await apis.handleFetch(r, request: c.frame, listener: c.listener) }
        t.serve(ListOffsetsRequest.self, 1...10) { apis, r, c in apis.encode(apis.handleListOffsets(r, version: c.version), c) }
        t.serve(OffsetForLeaderEpochRequest.self, 2...4) { apis, r, c in apis.encode(apis.handleOffsetForLeaderEpoch(r), c) }
        t.serve(DeleteRecordsRequest.self, 0...2) { apis, r, c in apis.encode(apis.handleDeleteRecords(r), c) }
        t.serve(InitProducerIdRequest.self, 0...5) { apis, r, c in apis.encode(await apis.handleInitProducerId(r), c) }
        t.serve(DescribeProducersRequest.self, 0...0) { apis, r, c in apis.encode(apis.handleDescribeProducers(r), c) }
        // Classic groups and offsets
        t.serve(FindCoordinatorRequest.self, 0...5) { apis, r, c in apis.encode(await apis.handleFindCoordinator(r, version: c.version, listener: c.listener), c) }
        t.serve(JoinGroupRequest.self, 0...9) { apis, r, c in
            apis.encode(await apis.handleJoinGroup(r, version: c.version, frame: c.frame, clientHost: c.clientHost), c)
        }
        t.serve(SyncGroupRequest.self, 0...5) { apis, r, c in apis.encode(await apis.handleSyncGroup(r, version: c.version), c) }
        t.serve(HeartbeatRequest.self, 0...4) { apis, r, c in apis.encode(await apis.handleHeartbeat(r), c) }
        t.serve(LeaveGroupRequest.self, 0...5) { apis, r, c in apis.encode(await apis.handleLeaveGroup(r, version: c.version), c) }
        t.serve(OffsetCommitRequest.self, 2...9) { apis, r, c in apis.encode(await apis.handleOffsetCommit(r, version: c.version), c) }
        t.serve(OffsetFetchRequest.self, 1...9) { apis, r, c in apis.encode(await apis.handleOffsetFetch(r, version: c.version), c) }
        t.serve(OffsetDeleteRequest.self, 0...0) { apis, r, c in apis.encode(await apis.handleOffsetDelete(r), c) }
        t.serve(ListGroupsRequest.self, 0...5) { apis, r, c in apis.encode(await apis.handleListGroups(r), c) }
        t.serve(DescribeGroupsRequest.self, 0...5) { apis, r, c in apis.encode(await apis.handleDescribeGroups(r), c) }
        t.serve(DeleteGroupsRequest.self, 0...2) { apis, r, c in apis.encode(await apis.handleDeleteGroups(r), c) }
        // KIP-848 groups
        t.serve(ConsumerGroupHeartbeatRequest.self, 0...1) { apis, r, c in
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
            for id in r.groupIds { response.groups.append(await apis.groupCoordinator.describeConsumerGroup(id)) }
            return apis.encode(response, c)
        }
        // Fjord's stream reads
        t.serve(FjordReadStreamRequest.self, 0...1) { apis, r, c in apis.encode(apis.handleFjordReadStream(r), c) }
        t.serve(FjordStreamRevisionsRequest.self, 0...0) { apis, r, c in apis.encode(apis.handleFjordStreamRevisions(r), c) }

        return t.handlers
    }()

    /// The versions each served API advertises in ApiVersions (from `handlers`).
    public static let supportedVersions: [APIKey: ClosedRange<Int16>] = handlers.mapValues(\.versions)

    /// Encodes a response to the request in `context`.
    func encode<Response: KafkaResponse>(_ response: Response, _ context: RequestContext) -> BrokerReply {
        encode(response, version: context.version, request: context.frame)
    }
}
