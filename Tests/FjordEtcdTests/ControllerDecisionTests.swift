import FjordMetadata
@testable import FjordMetadataEtcd
import Testing

/// The controller's decisions as pure functions of a partition's registration and the live
/// brokers: elections from the ISR, ISR shrinks, offline partitions, controlled shutdown,
/// AlterPartition validation, and replica assignment.
@Suite("Controller decisions")
struct ControllerDecisionTests {
    func image(alive: [Int32], stopping: [Int32] = []) -> MetadataImage {
        var image = MetadataImage(clusterID: "c", controllerID: 1)
        image.brokers = alive.map { id in
            var broker = BrokerRegistration(nodeID: id, host: "127.0.0.1", port: 9000 + id)
            if stopping.contains(id) { broker.inControlledShutdown = true }
            return broker
        }
        return image
    }

    let full = PartitionRegistration(replicas: [1, 2, 3], isr: [1, 2, 3], leader: 1, leaderEpoch: 4, partitionEpoch: 7)

    @Test("a healthy partition stays as it is")
    func healthy() {
        #expect(EtcdMetadataStore.nextRegistration(full, image: image(alive: [1, 2, 3]), unclean: false) == nil)
    }

    @Test("a dead leader is replaced by the first live ISR member in replica order, epochs bumped, and leaves the ISR")
    func deadLeader() throws {
        let next = try #require(EtcdMetadataStore.nextRegistration(full, image: image(alive: [2, 3]), unclean: false))
        #expect(next.leader == 2 && next.isr == [2, 3])
        #expect(next.leaderEpoch == 5 && next.partitionEpoch == 8)
    }

    @Test("a dead follower leaves the ISR; the leader and its epoch stay")
    func deadFollower() throws {
        let next = try #require(EtcdMetadataStore.nextRegistration(full, image: image(alive: [1, 3]), unclean: false))
        #expect(next.leader == 1 && next.isr == [1, 3] && next.leaderEpoch == 4 && next.partitionEpoch == 8)
    }

    @Test("no live ISR member: offline, the ISR keeps its last member, no unclean election unless enabled")
    func offlineUnlessUnclean() throws {
        let alone = PartitionRegistration(replicas: [1, 2, 3], isr: [1], leader: 1, leaderEpoch: 2, partitionEpoch: 3)
        let offline = try #require(EtcdMetadataStore.nextRegistration(alone, image: image(alive: [2, 3]), unclean: false))
        #expect(offline.leader == -1 && offline.isr == [1] && offline.leaderEpoch == 3)
        // Stays offline while nothing changes.
        #expect(EtcdMetadataStore.nextRegistration(offline, image: image(alive: [2, 3]), unclean: false) == nil)
        // Its ISR member returns: it leads again.
        let back = try #require(EtcdMetadataStore.nextRegistration(offline, image: image(alive: [1, 2, 3]), unclean: false))
        #expect(back.leader == 1 && back.leaderEpoch == 4)
        // Unclean: a live replica outside the ISR takes over, alone in the ISR.
        let unclean = try #require(EtcdMetadataStore.nextRegistration(alone, image: image(alive: [2, 3]), unclean: true))
        #expect(unclean.leader == 2 && unclean.isr == [2])
    }

    @Test("controlled shutdown moves leadership to another ISR member, or keeps it when none is in sync")
    func controlledShutdown() throws {
        let moved = try #require(EtcdMetadataStore.nextRegistration(full, image: image(alive: [1, 2, 3], stopping: [1]), unclean: false))
        #expect(moved.leader == 2 && moved.isr == [2, 3])
        let alone = PartitionRegistration(replicas: [1, 2, 3], isr: [1], leader: 1)
        #expect(EtcdMetadataStore.nextRegistration(alone, image: image(alive: [1, 2, 3], stopping: [1]), unclean: false) == nil)
    }

    @Test("AlterPartition applies only from the current leader at the current epochs, keeping the leader")
    func alterPartition() throws {
        let request = ISRRequest(leader: 1, leaderEpoch: 4, partitionEpoch: 7, isr: [1])
        let shrunk = try #require(EtcdMetadataStore.altered(full, by: request))
        #expect(shrunk.isr == [1] && shrunk.partitionEpoch == 8 && shrunk.leaderEpoch == 4)
        #expect(EtcdMetadataStore.altered(full, by: ISRRequest(leader: 2, leaderEpoch: 4, partitionEpoch: 7, isr: [2])) == nil)
        #expect(EtcdMetadataStore.altered(full, by: ISRRequest(leader: 1, leaderEpoch: 3, partitionEpoch: 7, isr: [1])) == nil)
        #expect(EtcdMetadataStore.altered(full, by: ISRRequest(leader: 1, leaderEpoch: 4, partitionEpoch: 6, isr: [1])) == nil)
        #expect(EtcdMetadataStore.altered(full, by: ISRRequest(leader: 1, leaderEpoch: 4, partitionEpoch: 7, isr: [2])) == nil)
        #expect(EtcdMetadataStore.altered(full, by: ISRRequest(leader: 1, leaderEpoch: 4, partitionEpoch: 7, isr: [1, 9])) == nil)
    }

    @Test("assignment: round robin over brokers, distinct replicas, racks alternated")
    func assignment() throws {
        let brokers = [3, 1, 2].map { BrokerRegistration(nodeID: Int32($0), host: "h", port: 1) }
        let plain = try ReplicaAssignment.assign(count: 3, replicationFactor: 2, brokers: brokers)
        #expect(plain == [[1, 2], [2, 3], [3, 1]])
        #expect(throws: MetadataError.self) { try ReplicaAssignment.assign(count: 1, replicationFactor: 4, brokers: brokers) }
        let racked = [(1, "a"), (2, "a"), (3, "b"), (4, "b")].map { BrokerRegistration(nodeID: Int32($0.0), host: "h", port: 1, rack: $0.1) }
        for replicas in try ReplicaAssignment.assign(count: 8, replicationFactor: 2, brokers: racked) {
            let racks = Set(replicas.map { id in racked.first { $0.nodeID == id }!.rack! })
            #expect(racks.count == 2, "replicas \(replicas) share a rack")
        }
    }

    @Test("cluster addresses: etcd://host:port[/prefix]")
    func addresses() throws {
        let address = try EtcdClusterAddress(parsing: "etcd://localhost:2379")
        #expect(address.host == "127.0.0.1" && address.port == 2379 && address.layout.prefix == "/fjord")
        #expect(try EtcdClusterAddress(parsing: "etcd://10.0.0.1:2379/prod/").layout.prefix == "/prod")
        #expect(throws: EtcdAddressError.self) { try EtcdClusterAddress(parsing: "http://127.0.0.1:2379") }
        #expect(throws: EtcdAddressError.self) { try EtcdClusterAddress(parsing: "etcd://127.0.0.1") }
    }
}
