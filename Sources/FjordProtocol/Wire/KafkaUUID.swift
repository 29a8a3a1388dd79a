/// Kafka's `Uuid`: 16 bytes on the wire, most significant half first.
///
/// Topic ids and directory ids are `KafkaUUID`s. `zero` is Kafka's `ZERO_UUID`, meaning "none".
/// Printed as Kafka prints it: URL-safe base64 without padding (22 characters).
public struct KafkaUUID: Sendable, Hashable, CustomStringConvertible {
    public var mostSignificantBits: UInt64
    public var leastSignificantBits: UInt64

    public static let zero: KafkaUUID = KafkaUUID(mostSignificantBits: 0, leastSignificantBits: 0)

    public init(mostSignificantBits: UInt64, leastSignificantBits: UInt64) {
        self.mostSignificantBits = mostSignificantBits
        self.leastSignificantBits = leastSignificantBits
    }

    /// A random version-4 UUID, as `Uuid.randomUuid()` makes (never `zero`).
    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> KafkaUUID {
        var high: UInt64 = generator.next()
        var low: UInt64 = generator.next()
        high = (high & ~0xF000) | 0x4000  // version 4
        low = (low & ~(0xC000_0000_0000_0000)) | 0x8000_0000_0000_0000  // IETF variant
        return KafkaUUID(mostSignificantBits: high, leastSignificantBits: low)
    }

    public static func random() -> KafkaUUID {
        var generator = SystemRandomNumberGenerator()
        return random(using: &generator)
    }

    /// The 16 bytes, big-endian.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        for shift in stride(from: 56, through: 0, by: -8) {
            out.append(UInt8(truncatingIfNeeded: mostSignificantBits >> UInt64(shift)))
        }
        for shift in stride(from: 56, through: 0, by: -8) {
            out.append(UInt8(truncatingIfNeeded: leastSignificantBits >> UInt64(shift)))
        }
        return out
    }

    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// URL-safe base64 without padding, as Kafka's `Uuid.toString()`.
    public var description: String {
        let input = bytes
        var out: [UInt8] = []
        out.reserveCapacity(22)
        var index = 0
        while index < input.count {
            let b0 = UInt32(input[index])
            let b1 = index + 1 < input.count ? UInt32(input[index + 1]) : 0
            let b2 = index + 2 < input.count ? UInt32(input[index + 2]) : 0
            let triple = (b0 << 16) | (b1 << 8) | b2
            let remaining = input.count - index
            out.append(Self.alphabet[Int((triple >> 18) & 63)])
            out.append(Self.alphabet[Int((triple >> 12) & 63)])
            if remaining > 1 { out.append(Self.alphabet[Int((triple >> 6) & 63)]) }
            if remaining > 2 { out.append(Self.alphabet[Int(triple & 63)]) }
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses Kafka's 22-character URL-safe base64 form; nil when malformed.
    public init?(_ text: String) {
        let chars = Array(text.utf8)
        guard chars.count == 22 else { return nil }
        var values: [UInt32] = []
        values.reserveCapacity(22)
        for c in chars {
            guard let v = Self.alphabet.firstIndex(of: c) else { return nil }
            values.append(UInt32(v))
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16)
        var index = 0
        while index < values.count {
            let group = values[index..<Swift.min(index + 4, values.count)]
            var acc: UInt32 = 0
            for v in group { acc = (acc << 6) | v }
            acc <<= UInt32(6 * (4 - group.count))
            let produced = group.count - 1
            for k in 0..<produced {
                bytes.append(UInt8(truncatingIfNeeded: acc >> UInt32(16 - 8 * k)))
            }
            index += 4
        }
        guard bytes.count == 16 else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for i in 0..<8 { high = (high << 8) | UInt64(bytes[i]) }
        for i in 8..<16 { low = (low << 8) | UInt64(bytes[i]) }
        self.init(mostSignificantBits: high, leastSignificantBits: low)
    }
}
