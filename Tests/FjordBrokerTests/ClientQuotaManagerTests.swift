@testable import FjordBroker
import FjordMetadata
import FjordProtocol
import Testing

/// `ClientQuotaManager`: Kafka's precedence, the windowed rate and the throttle time.
struct ClientQuotaManagerTests {
    static func image(_ entries: [(ClientQuotaEntity, [String: Double])], epoch: Int64 = 1) -> MetadataImage {
        var image = MetadataImage(clusterID: "c", controllerID: 1, epoch: epoch)
        image.clientQuotas = entries.map { ClientQuotaEntry(entity: $0.0, values: $0.1) }
        return image
    }

    @Test("the most specific of the eight levels applies, and its level decides who shares the rate")
    func precedence() {
        let quotas: [ClientQuotaEntity: [String: Double]] = [
            ClientQuotaEntity(user: .named("alice"), clientID: .named("app")): ["producer_byte_rate": 1],
            ClientQuotaEntity(user: .named("alice")): ["producer_byte_rate": 3, "consumer_byte_rate": 30],
            ClientQuotaEntity(user: .defaultName): ["producer_byte_rate": 6],
            ClientQuotaEntity(clientID: .named("tool")): ["producer_byte_rate": 7, "consumer_byte_rate": 70],
            ClientQuotaEntity(clientID: .defaultName): ["consumer_byte_rate": 80],
        ]
        func resolve(_ key: ClientQuotaKey, _ user: String, _ client: String) -> (Double, String, String)? {
            ClientQuotaManager.resolve(quotas, key, user: user, clientID: client).map { ($0.limit, $0.sensor.user, $0.sensor.clientID) }
        }
        #expect(resolve(.producerByteRate, "alice", "app")! == (1, "alice", "app"))
        #expect(resolve(.producerByteRate, "alice", "other")! == (3, "alice", ""))
        #expect(resolve(.producerByteRate, "bob", "tool")! == (6, "bob", ""))
        // Each key resolves on its own: bob's consumer quota comes from the client id.
        #expect(resolve(.consumerByteRate, "bob", "tool")! == (70, "", "tool"))
        #expect(resolve(.consumerByteRate, "bob", "x")! == (80, "", "x"))
        #expect(resolve(.requestPercentage, "bob", "x") == nil)
    }

    @Test("throttle = (rate − quota) / quota × span; nothing without a quota; sensors expire with their windows")
    func throttle() {
        let manager = ClientQuotaManager(settings: .init(windowCount: 11, windowMs: 1000))
        let image = Self.image([(ClientQuotaEntity(clientID: .named("c")), ["producer_byte_rate": 1000])])
        // 500 bytes in the first window: 500 B/s over the one-window minimum span, within quota.
        #expect(manager.record(.producerByteRate, 500, user: "u", clientID: "c", image: image, nowMs: 10_000) == 0)
        // 2,500 more: 3,000 B over 1 s is three times the quota, so throttled for 2 s.
        #expect(manager.record(.producerByteRate, 2500, user: "u", clientID: "c", image: image, nowMs: 10_000) == 2000)
        // Four seconds later the span is 4 s: 3,000 / 4 = 750 B/s, within quota again.
        #expect(manager.currentThrottle(.producerByteRate, user: "u", clientID: "c", image: image, nowMs: 14_000) == 0)
        // Another client id has no quota.
        #expect(manager.record(.producerByteRate, 1_000_000, user: "u", clientID: "other", image: image, nowMs: 14_000) == 0)
        // After 11 windows the samples have expired.
        #expect(manager.rate(.producerByteRate, user: "u", clientID: "c", image: image, nowMs: 21_001) == 0)
    }

    @Test("request-time throttles are capped at one window")
    func requestCap() {
        let manager = ClientQuotaManager(settings: .init(windowCount: 11, windowMs: 1000))
        let image = Self.image([(ClientQuotaEntity(user: .named("u")), ["request_percentage": 1])])
        #expect(manager.record(.requestPercentage, 500, user: "u", clientID: "c", image: image, nowMs: 5_000) == 1000)
    }

    @Test("AlterClientQuotas entries as Kafka's controller validates them")
    func validation() {
        func entry(_ entity: [(String, String?)], _ ops: [(String, Double, Bool)]) -> AlterClientQuotasRequest.EntryData {
            var data = AlterClientQuotasRequest.EntryData()
            data.entity = entity.map { type, name in
                var component = AlterClientQuotasRequest.EntityData()
                component.entityType = type
                component.entityName = name
                return component
            }
            data.ops = ops.map { key, value, remove in
                var op = AlterClientQuotasRequest.OpData()
                (op.key, op.value, op.remove) = (key, value, remove)
                return op
            }
            return data
        }
        func refused(_ data: AlterClientQuotasRequest.EntryData) -> Bool {
            if case .failure = KafkaAPIs.clientQuotaChange(data) { return true }
            return false
        }
        #expect(!refused(entry([("user", "a")], [("producer_byte_rate", 10, false)])))
        #expect(!refused(entry([("user", nil), ("client-id", "x")], [("request_percentage", 0.5, false), ("consumer_byte_rate", 0, true)])))
        #expect(refused(entry([], [("producer_byte_rate", 10, false)])))
        #expect(refused(entry([("user", "")], [("producer_byte_rate", 10, false)])))
        #expect(refused(entry([("group", "g")], [("producer_byte_rate", 10, false)])))
        #expect(refused(entry([("user", "a")], [("producer_byte_rate", 1.5, false)])))
        #expect(refused(entry([("user", "a")], [("producer_byte_rate", -1, false)])))
        #expect(refused(entry([("user", "a")], [("controller_mutation_rate", 1, false)])))
        #expect(refused(entry([("user", "a"), ("user", "b")], [("producer_byte_rate", 1, false)])))
    }

    @Test("changes apply in order and an entity left without keys goes away")
    func applying() {
        let alice = ClientQuotaEntity(user: .named("alice"))
        var entries = MetadataImage.applying([ClientQuotaChange(entity: alice, values: ["producer_byte_rate": 5, "consumer_byte_rate": 6])], to: [])
        #expect(entries == [ClientQuotaEntry(entity: alice, values: ["producer_byte_rate": 5, "consumer_byte_rate": 6])])
        entries = MetadataImage.applying([ClientQuotaChange(entity: alice, values: ["producer_byte_rate": nil as Double?])], to: entries)
        #expect(entries == [ClientQuotaEntry(entity: alice, values: ["consumer_byte_rate": 6])])
        entries = MetadataImage.applying([ClientQuotaChange(entity: alice, values: ["consumer_byte_rate": nil as Double?])], to: entries)
        #expect(entries.isEmpty)
    }
}
