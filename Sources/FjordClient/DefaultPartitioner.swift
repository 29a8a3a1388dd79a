/// Kafka's default partitioning for keyed records: `toPositive(murmur2(key)) % partitions`, the
/// Java client's `Utils.murmur2` bit for bit, so a key lands on the same partition as with Kafka's
/// Java clients and librdkafka's `murmur2_random`. Records without a key use sticky partitioning
/// (the producer keeps one partition until a batch completes), which the producer decides.
public enum DefaultPartitioner {
    /// Kafka's `Utils.murmur2`: MurmurHash2, seed 0x9747b28c, 32-bit, little-endian words.
    public static func murmur2<Bytes: Collection<UInt8>>(_ data: Bytes) -> Int32 {
        let bytes = Array(data)
        let length = bytes.count
        let m: UInt32 = 0x5BD1_E995
        let r: UInt32 = 24
        var h: UInt32 = 0x9747_B28C ^ UInt32(truncatingIfNeeded: length)
        let words = length / 4
        for i in 0..<words {
            let base = i * 4
            var k = UInt32(bytes[base]) | UInt32(bytes[base + 1]) << 8 | UInt32(bytes[base + 2]) << 16 | UInt32(bytes[base + 3]) << 24
            k = k &* m
            k ^= k >> r
            k = k &* m
            h = h &* m
            h ^= k
        }
        let tail = length & ~3
        switch length % 4 {
        case 3:
            h ^= UInt32(bytes[tail + 2]) << 16
            h ^= UInt32(bytes[tail + 1]) << 8
            h ^= UInt32(bytes[tail])
            h = h &* m
        case 2:
            h ^= UInt32(bytes[tail + 1]) << 8
            h ^= UInt32(bytes[tail])
            h = h &* m
        case 1:
            h ^= UInt32(bytes[tail])
            h = h &* m
        default:
            break
        }
        h ^= h >> 13
        h = h &* m
        h ^= h >> 15
        return Int32(bitPattern: h)
    }

    /// The partition of a keyed record among `partitions` partitions.
    public static func partition<Bytes: Collection<UInt8>>(forKey key: Bytes, partitions: Int32) -> Int32 {
        precondition(partitions > 0, "a topic has at least one partition")
        return (murmur2(key) & 0x7FFF_FFFF) % partitions
    }
}
