import FjordClient
import Testing

@Suite("Default partitioner")
struct DefaultPartitionerTests {
    /// Expected values computed with kafka-python 3.0.12's `kafka.partitioner.default.murmur2`
    /// (a port of Kafka's Java `Utils.murmur2`), printed as unsigned 32-bit integers.
    static let vectors: [(String, UInt32, Int32, Int32)] = [
        ("", 275_646_681, 3, 31),
        ("a", 2_731_586_172, 4, 24),
        ("ab", 316_155_434, 2, 34),
        ("abc", 479_470_107, 3, 7),
        ("abcd", 2_971_317_748, 2, 0),
        ("hello", 2_132_663_229, 3, 29),
        ("order-42", 501_153_024, 0, 24),
        ("customer:1001", 2_000_451_828, 0, 28),
        ("ü-unicode", 412_092_257, 5, 7),
        (String(repeating: "x", count: 37), 4_016_325_283, 5, 35),
    ]

    @Test("murmur2 and the partition match Kafka's Java client for known keys", arguments: vectors)
    func knownKeys(key: String, hash: UInt32, of6: Int32, of50: Int32) {
        #expect(UInt32(bitPattern: DefaultPartitioner.murmur2(Array(key.utf8))) == hash)
        #expect(DefaultPartitioner.partition(forKey: Array(key.utf8), partitions: 6) == of6)
        #expect(DefaultPartitioner.partition(forKey: Array(key.utf8), partitions: 50) == of50)
    }
}
