/// Where a new partition's replicas go (Kafka's `AdminUtils.assignReplicasToBrokers`, simplified).
///
/// Round robin over the live brokers sorted by node id: partition p's first replica (its
/// preferred leader) is broker `(start + p) % n` and its followers the next brokers after it,
/// so leaders and replicas spread evenly. With `broker.rack` set on brokers, the list is first
/// interleaved by rack (a broker of each rack in turn), so consecutive replicas, and thus the
/// replicas of one partition, sit on different racks whenever there are enough racks.
public enum ReplicaAssignment {
    /// Replica lists for partitions `firstPartition ..< firstPartition + count`.
    public static func assign(count: Int32, firstPartition: Int32 = 0, replicationFactor: Int16,
                              brokers: [BrokerRegistration], start: Int = 0) throws(MetadataError) -> [[Int32]] {
        guard replicationFactor > 0 else { throw MetadataError.invalidReplicationFactor("replication factor must be larger than 0") }
        guard Int(replicationFactor) <= brokers.count else {
            throw MetadataError.invalidReplicationFactor(
                "replication factor: \(replicationFactor) larger than available brokers: \(brokers.count)")
        }
        let ordered = rackAlternated(brokers)
        let n = ordered.count
        var result: [[Int32]] = []
        for p in 0..<Int(count) {
            let first = (start + Int(firstPartition) + p) % n
            result.append((0..<Int(replicationFactor)).map { ordered[(first + $0) % n] })
        }
        return result
    }

    /// Node ids sorted, interleaved by rack when any broker has one.
    static func rackAlternated(_ brokers: [BrokerRegistration]) -> [Int32] {
        let sorted = brokers.sorted { $0.nodeID < $1.nodeID }
        guard sorted.contains(where: { $0.rack != nil }) else { return sorted.map(\.nodeID) }
        var byRack: [String: [Int32]] = [:]
        for broker in sorted { byRack[broker.rack ?? "", default: []].append(broker.nodeID) }
        let racks = byRack.keys.sorted()
        var result: [Int32] = []
        var round = 0
        while result.count < sorted.count {
            for rack in racks where round < byRack[rack]!.count { result.append(byRack[rack]![round]) }
            round += 1
        }
        return result
    }
}
