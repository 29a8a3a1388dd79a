import FjordMetadata
import FjordProtocol
import Logging
import NIOCore
import Synchronization

// Client quotas (KIP-13/55/124/219/546): DescribeClientQuotas and AlterClientQuotas over the
// metadata image, and the throttles of `ClientQuotaManager` applied to responses.
//
// A throttled client gets its answer at once with `throttle_time_ms` set, then its connection
// is not read for that long (`BrokerReply.throttled`), as Kafka's brokers do since 2.0. Produce
// and fetch bytes are recorded as they are served (produce: the request's size; fetch: the
// record bytes of the response); request time is each request's time in its handler, less the
// time it was parked (long polls, replication and rebalance waits, fsyncs), and is checked
// before the request so the throttle lands on the response.

/// The quota identity of a request: its principal's name and its client id.
struct QuotaClient: Sendable {
    let user: String
    let clientID: String

    init(_ context: RequestContext) {
        user = (context.connection.principal ?? .anonymous).name
        clientID = context.frame.header.clientId ?? ""
    }
}

/// The quota state of the request being handled, bound as a task local only while the broker
/// has client quotas (otherwise nothing is allocated or measured).
final class RequestQuotaScope: Sendable {
    @TaskLocal static var current: RequestQuotaScope?

    /// The request-time throttle decided before the request.
    let requestThrottleMs: Int64
    /// The image the request's quotas come from (read once per request).
    let image: MetadataImage
    let client: QuotaClient
    /// The byte-rate throttle the handler recorded (produce, fetch).
    let byteThrottleMs = Atomic<Int64>(0)
    /// Time the request spent parked (waits that hold no thread), excluded from request time.
    let parkedNanos = Atomic<Int64>(0)

    init(requestThrottleMs: Int64, image: MetadataImage, client: QuotaClient) {
        self.requestThrottleMs = requestThrottleMs
        self.image = image
        self.client = client
    }

    var throttleMs: Int64 { Swift.max(requestThrottleMs, byteThrottleMs.load(ordering: .relaxed)) }

    /// Runs `body`, counting its time as parked for the current request (if any is measured).
    static func parked<T>(_ body: () async throws -> T) async rethrows -> T {
        guard let scope = current else { return try await body() }
        let started = ContinuousClock.now
        defer {
            let elapsed = started.duration(to: .now).components
            scope.parkedNanos.add(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000, ordering: .relaxed)
        }
        return try await body()
    }
}

extension KafkaAPIs {
    /// Runs a request's handler under quotas (when the broker has any): the request-time
    /// throttle decided from the client's past requests, the handler's byte throttles, and its
    /// busy time recorded afterwards. The reply is wrapped in `.throttled` when any applies.
    func withQuotas(_ context: RequestContext, _ body: () async -> BrokerReply) async -> BrokerReply {
        let image = metadata.image
        guard image.clientQuotas != nil else { return await body() }
        let client = QuotaClient(context)
        let throttle = quotas.currentThrottle(.requestPercentage, user: client.user, clientID: client.clientID, image: image, nowMs: clock())
        let scope = RequestQuotaScope(requestThrottleMs: throttle, image: image, client: client)
        let started = ContinuousClock.now
        let reply = await RequestQuotaScope.$current.withValue(scope) { await body() }
        let elapsed = started.duration(to: .now).components
        let busyNanos = elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000 - scope.parkedNanos.load(ordering: .relaxed)
        // Percent-seconds: a request busy for 10 ms adds 1; a rate of 100 is one thread's whole time.
        _ = quotas.record(.requestPercentage, Double(Swift.max(0, busyNanos)) / 10_000_000, user: client.user, clientID: client.clientID,
                          image: image, nowMs: clock())
        let total = scope.throttleMs
        guard total > 0 else { return reply }
        switch reply {
        case .closeConnection, .responseThenClose: return reply
        default: return .throttled(reply, ms: total)
        }
    }

    /// Sets a response's `throttle_time_ms` from the current request's throttles (if any).
    func applyThrottle<Response: KafkaResponse>(_ response: inout Response, version: Int16) {
        guard let scope = RequestQuotaScope.current, case let ms = scope.throttleMs, ms > 0 else { return }
        guard var throttled = response as? any KafkaThrottledResponse, type(of: throttled).throttleTimeVersions.contains(version) else { return }
        throttled.throttleTimeMs = Int32(clamping: ms)
        if let back = throttled as? Response { response = back }
    }

    /// Records `bytes` against a byte quota of the current request's client; its throttle joins
    /// the request's. Nothing at all when the broker has no quotas (no scope is bound).
    func recordBytes(_ key: ClientQuotaKey, _ bytes: Int) {
        guard let scope = RequestQuotaScope.current, bytes > 0 else { return }
        let throttle = quotas.record(key, Double(bytes), user: scope.client.user, clientID: scope.client.clientID, image: scope.image,
                                     nowMs: clock())
        if throttle > 0 { _ = scope.byteThrottleMs.max(throttle, ordering: .relaxed) }
    }

    // MARK: DescribeClientQuotas, AlterClientQuotas

    func handleDescribeClientQuotas(_ request: DescribeClientQuotasRequest, _ access: Access) -> DescribeClientQuotasResponse {
        var response = DescribeClientQuotasResponse()
        response.errorMessage = nil
        func fail(_ error: KafkaError, _ message: String) -> DescribeClientQuotasResponse {
            response.errorCode = error.code
            response.errorMessage = message
            response.entries = nil
            return response
        }
        guard access.allowsCluster(.describeConfigs) else { return fail(.clusterAuthorizationFailed, "Cluster authorization failed.") }
        var seen = Set<String>()
        for component in request.components {
            guard !component.entityType.isEmpty else { return fail(.invalidRequest, "Invalid empty entity type") }
            guard seen.insert(component.entityType).inserted else {
                return fail(.invalidRequest, "Duplicate entity type in filter: \(component.entityType)")
            }
            guard component.entityType == ClientQuotaEntity.userType || component.entityType == ClientQuotaEntity.clientIDType
                || component.entityType == "ip" else {
                return fail(.unsupportedVersion, "Unsupported entity type \(component.entityType)")
            }
            switch component.matchType {
            case 0 where component.match == nil: return fail(.invalidRequest, "Exact match requested but no name given")
            case 1, 2 where component.match != nil: return fail(.invalidRequest, "A default or specified match must not name an entity")
            case 0, 1, 2: break
            default: return fail(.invalidRequest, "Unknown match type \(component.matchType)")
            }
        }
        var entries: [DescribeClientQuotasResponse.EntryData] = []
        for entry in metadata.image.clientQuotas ?? [] {
            let components = entry.entity.components
            if request.strict && components.count != request.components.count { continue }
            let matches = request.components.allSatisfy { filter in
                guard let component = components.first(where: { $0.type == filter.entityType }) else { return false }
                switch filter.matchType {
                case 0: return component.name == filter.match
                case 1: return component.name == nil
                default: return true
                }
            }
            guard matches else { continue }
            var data = DescribeClientQuotasResponse.EntryData()
            data.entity = components.map { component in
                var entity = DescribeClientQuotasResponse.EntityData()
                entity.entityType = component.type
                entity.entityName = component.name
                return entity
            }
            data.values = entry.values.keys.sorted().map { key in
                var value = DescribeClientQuotasResponse.ValueData()
                value.key = key
                value.value = entry.values[key] ?? 0
                return value
            }
            entries.append(data)
        }
        response.entries = entries
        return response
    }

    func handleAlterClientQuotas(_ request: AlterClientQuotasRequest, _ access: Access) async -> AlterClientQuotasResponse {
        var response = AlterClientQuotasResponse()
        var results: [AlterClientQuotasResponse.EntryData] = request.entries.map { entry in
            var result = AlterClientQuotasResponse.EntryData()
            result.errorMessage = nil
            result.entity = entry.entity.map { component in
                var entity = AlterClientQuotasResponse.EntityData()
                entity.entityType = component.entityType
                entity.entityName = component.entityName
                return entity
            }
            return result
        }
        guard access.allowsCluster(.alterConfigs) else {
            for index in results.indices {
                results[index].errorCode = KafkaError.clusterAuthorizationFailed.code
                results[index].errorMessage = "Cluster authorization failed."
            }
            response.entries = results
            return response
        }
        var changes: [(Int, ClientQuotaChange)] = []
        var entities = Set<ClientQuotaEntity>()
        for (index, entry) in request.entries.enumerated() {
            switch Self.clientQuotaChange(entry) {
            case .failure(let message):
                results[index].errorCode = KafkaError.invalidRequest.code
                results[index].errorMessage = message.text
            case .success(let change):
                guard entities.insert(change.entity).inserted else {
                    results[index].errorCode = KafkaError.invalidRequest.code
                    results[index].errorMessage = "Duplicate quota entity \(change.entity)"
                    continue
                }
                changes.append((index, change))
            }
        }
        if !changes.isEmpty && !request.validateOnly {
            do {
                try await metadata.alterClientQuotas(changes.map(\.1))
                logger.info("client quotas changed", metadata: ["changes": "\(changes.map { "\($0.1.entity): \($0.1.values)" })"])
            } catch {
                for (index, _) in changes {
                    results[index].errorCode = error.kafkaError.code
                    results[index].errorMessage = error.description
                }
            }
        }
        response.entries = results
        return response
    }

    struct QuotaRefusal: Error {
        let text: String
    }

    /// One AlterClientQuotas entry as a change, or why it is refused (INVALID_REQUEST), as
    /// Kafka's controller validates them.
    static func clientQuotaChange(_ entry: AlterClientQuotasRequest.EntryData) -> Result<ClientQuotaChange, QuotaRefusal> {
        var entity = ClientQuotaEntity()
        guard !entry.entity.isEmpty else { return .failure(QuotaRefusal(text: "Invalid empty client quota entity")) }
        for component in entry.entity {
            if component.entityName == "" { return .failure(QuotaRefusal(text: "Empty \(component.entityType) not supported (use the default)")) }
            let name = ClientQuotaEntity.Name(wire: component.entityName)
            switch component.entityType {
            case ClientQuotaEntity.userType:
                guard entity.user == nil else { return .failure(QuotaRefusal(text: "Duplicate entity type user")) }
                entity.user = name
            case ClientQuotaEntity.clientIDType:
                guard entity.clientID == nil else { return .failure(QuotaRefusal(text: "Duplicate entity type client-id")) }
                entity.clientID = name
            case "ip":
                return .failure(QuotaRefusal(text: "ip quotas (connection_creation_rate) are not supported by Fjord"))
            default:
                return .failure(QuotaRefusal(text: "Unhandled client quota entity type: \(component.entityType)"))
            }
        }
        var values: [String: Double?] = [:]
        for op in entry.ops {
            guard values[op.key] == nil else { return .failure(QuotaRefusal(text: "Duplicate quota key \(op.key)")) }
            guard let key = ClientQuotaKey(rawValue: op.key) else {
                let known = ClientQuotaKey.allCases.map(\.rawValue).joined(separator: ", ")
                return .failure(QuotaRefusal(text: "Invalid configuration key \(op.key) (Fjord enforces \(known))"))
            }
            if op.remove {
                values[op.key] = .some(nil)
                continue
            }
            guard op.value > 0, op.value.isFinite else { return .failure(QuotaRefusal(text: "Quota \(op.key) must be positive")) }
            if key.isIntegral && abs(op.value - op.value.rounded()) > 1e-6 {
                return .failure(QuotaRefusal(text: "Quota \(op.key) cannot be a fractional value"))
            }
            values[op.key] = op.value
        }
        return .success(ClientQuotaChange(entity: entity, values: values))
    }
}
