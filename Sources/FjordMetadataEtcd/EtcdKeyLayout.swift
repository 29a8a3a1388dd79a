public import FjordProtocol

/// Where cluster metadata lives in etcd, every key under one prefix (default `/fjord`):
///
/// | key | value | written by |
/// |---|---|---|
/// | `<p>/cluster-id` | the cluster id (text) | the first broker, once (put if absent) |
/// | `<p>/brokers/<node id>` | `BrokerRegistration` JSON, under the broker's lease | the broker |
/// | `<p>/controller` | `{"nodeID": n}`, under the controller's lease; its create revision is the controller epoch | the elected controller |
/// | `<p>/topics/<name>` | `TopicRecord` JSON: id, partition count, replication factor, configs | the controller |
/// | `<p>/partitions/<name>/<index>` | `PartitionRegistration` JSON: replicas, ISR, leader, epochs | the controller |
/// | `<p>/configs/topics/<name>` | the topic's config overrides after a change (AlterConfigs), JSON; absent: those it was created with | any broker, compare-and-swap |
/// | `<p>/configs/broker` | dynamic broker config overrides, JSON | any broker, compare-and-swap |
/// | `<p>/producer-ids` | the next producer id not handed out (text) | any broker, compare-and-swap |
/// | `<p>/scram/<user>` | the user's SCRAM credentials (salt, StoredKey, ServerKey, iterations), JSON | any broker, compare-and-swap |
/// | `<p>/acls/<hex of the binding>` | one `AclBinding` JSON; the key names the binding, so a duplicate is one key | any broker |
/// | `<p>/quotas/<hex of the entity>` | one `ClientQuotaEntry` JSON (the keys set on that entity) | any broker, compare-and-swap |
/// | `<p>/requests/topics/<name>` | `TopicRequest` JSON: an auto-creation asked by a broker | any broker; the controller deletes it |
/// | `<p>/requests/isr/<name>/<index>` | `ISRRequest` JSON: a leader's AlterPartition (its new ISR, at its epochs) | the leader; the controller applies and deletes it |
///
/// Config changes are compare-and-swap on their own keys by whichever broker a client asked, as
/// Kafka's ZooKeeper-era brokers wrote them; they need no controller decision. Every controller
/// write is a transaction whose first compare is the controller key's create
/// revision equal to the writer's epoch: a controller that lost its lease (and so its key) can
/// no longer write anything. Registrations also carry that epoch (`controllerEpoch`).
public struct EtcdKeyLayout: Sendable, Equatable {
    public let prefix: String

    public init(prefix: String = "/fjord") {
        var p = prefix
        while p.hasSuffix("/") { p.removeLast() }
        self.prefix = p.isEmpty ? "/fjord" : p
    }

    /// Every key of the cluster (the watched range).
    public var all: String { prefix + "/" }
    public var clusterID: String { prefix + "/cluster-id" }
    public var brokers: String { prefix + "/brokers/" }
    public func broker(_ id: Int32) -> String { brokers + String(id) }
    public var controller: String { prefix + "/controller" }
    public var topics: String { prefix + "/topics/" }
    public func topic(_ name: String) -> String { topics + name }
    public var partitions: String { prefix + "/partitions/" }
    public func partitions(of topic: String) -> String { partitions + topic + "/" }
    public func partition(_ topic: String, _ index: Int32) -> String { partitions(of: topic) + String(index) }
    public var brokerConfigs: String { prefix + "/configs/broker" }
    public var topicConfigs: String { prefix + "/configs/topics/" }
    public func topicConfigs(_ name: String) -> String { topicConfigs + name }
    public var producerIDs: String { prefix + "/producer-ids" }
    /// One key per SASL/SCRAM user: the JSON list of its credentials.
    public var scramCredentials: String { prefix + "/scram/" }
    public func scramCredentials(_ user: String) -> String { scramCredentials + user }
    /// One key per ACL binding, named by the binding itself (hex of its canonical form), so a
    /// binding created twice is one key.
    public var acls: String { prefix + "/acls/" }
    public func acl(_ binding: AclBinding) -> String {
        let canonical = "\(binding.resourceType.rawValue)\u{0}\(binding.patternType.rawValue)\u{0}\(binding.resourceName)\u{0}"
            + "\(binding.principal)\u{0}\(binding.host)\u{0}\(binding.operation.rawValue)\u{0}\(binding.permission.rawValue)"
        return acls + Self.hex(canonical)
    }

    /// Lowercase hex of `text`'s UTF-8: any name becomes one safe key segment.
    static func hex(_ text: String) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var hex: [UInt8] = []
        hex.reserveCapacity(text.utf8.count * 2)
        for byte in text.utf8 {
            hex.append(digits[Int(byte >> 4)])
            hex.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: hex, as: UTF8.self)
    }
    /// One key per client-quota entity, named by the entity.
    public var clientQuotas: String { prefix + "/quotas/" }
    public func clientQuota(_ entity: ClientQuotaEntity) -> String {
        clientQuotas + Self.hex(entity.components.map { "\($0.type)\u{0}\($0.name.map { "=" + $0 } ?? "*")" }.joined(separator: "\u{0}"))
    }
    public var topicRequests: String { prefix + "/requests/topics/" }
    public func topicRequest(_ name: String) -> String { topicRequests + name }
    public var isrRequests: String { prefix + "/requests/isr/" }
    public func isrRequest(_ topic: String, _ index: Int32) -> String { isrRequests + topic + "/" + String(index) }
}

/// `etcd://host:port[/prefix]`, the value of `fjord serve --cluster`.
public struct EtcdClusterAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var layout: EtcdKeyLayout

    public init(parsing text: String) throws(EtcdAddressError) {
        guard text.hasPrefix("etcd://") else { throw EtcdAddressError("\(text): expected etcd://host:port[/prefix]") }
        var rest = Substring(text.dropFirst("etcd://".count))
        var prefix = "/fjord"
        if let slash = rest.firstIndex(of: "/") {
            prefix = String(rest[slash...])
            rest = rest[..<slash]
        }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else {
            throw EtcdAddressError("\(text): expected etcd://host:port[/prefix] with a port")
        }
        let host = String(rest[..<colon])
        guard !host.isEmpty else { throw EtcdAddressError("\(text): no host") }
        self.host = host == "localhost" ? "127.0.0.1" : host
        self.port = port
        self.layout = EtcdKeyLayout(prefix: prefix == "/" ? "/fjord" : prefix)
    }

    public var description: String { "etcd://\(host):\(port)\(layout.prefix)" }
}

public struct EtcdAddressError: Error, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
