import FjordProtocol
import NIOCore
import Testing

/// SplitMix64: a tiny seeded generator, so a failing fuzz case can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Mutates a frame the way hostile or broken peers do: flipped bits, boundary values written
/// over length fields, truncation, inserted and deleted runs, duplicated slices.
func mutate(_ input: [UInt8], using rng: inout SplitMix64) -> [UInt8] {
    var bytes = input
    let mutations = Int.random(in: 1...4, using: &rng)
    for _ in 0..<mutations {
        if bytes.isEmpty {
            bytes = [UInt8.random(in: 0...255, using: &rng)]
            continue
        }
        let position = Int.random(in: 0..<bytes.count, using: &rng)
        switch Int.random(in: 0..<8, using: &rng) {
        case 0:
            bytes[position] ^= 1 << UInt8.random(in: 0...7, using: &rng)
        case 1:
            let specials: [UInt8] = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE]
            bytes[position] = specials[Int.random(in: 0..<specials.count, using: &rng)]
        case 2:
            bytes.removeSubrange(position...)
        case 3:
            // A boundary int32 over what may be a length or count: -1, -2, Int32.max, 2^16.
            let patterns: [[UInt8]] = [[0xFF, 0xFF, 0xFF, 0xFF], [0xFF, 0xFF, 0xFF, 0xFE], [0x7F, 0xFF, 0xFF, 0xFF], [0, 1, 0, 0]]
            let pattern = patterns[Int.random(in: 0..<patterns.count, using: &rng)]
            for (i, b) in pattern.enumerated() where position + i < bytes.count { bytes[position + i] = b }
        case 4:
            // A run of continuation bytes: an overlong varint.
            let run = Int.random(in: 1...12, using: &rng)
            bytes.insert(contentsOf: [UInt8](repeating: 0xFF, count: run), at: position)
        case 5:
            let run = Int.random(in: 1...8, using: &rng)
            bytes.insert(contentsOf: (0..<run).map { _ in UInt8.random(in: 0...255, using: &rng) }, at: position)
        case 6:
            let end = Swift.min(bytes.count, position + Int.random(in: 1...16, using: &rng))
            bytes.removeSubrange(position..<end)
        default:
            let end = Swift.min(bytes.count, position + Int.random(in: 1...32, using: &rng))
            bytes.insert(contentsOf: bytes[position..<end], at: position)
        }
    }
    return bytes
}

@Suite("Fuzzing the decoders")
struct FuzzTests {
    /// 100,000 mutated fixture frames through the request, response and record-batch decoders:
    /// each either decodes or throws a typed error. A trap would kill the test process.
    @Test("100,000 mutated frames never trap")
    func mutatedFrames() throws {
        let frames = Fixture.frames.map { ($0, $0.bytes.allBytes) }
        let batches = Fixture.batches.map(\.bytes.allBytes)
        try #require(!frames.isEmpty, "no fixtures to mutate")
        var rng = SplitMix64(seed: 0xF70D_2026)
        var decoded = 0
        var refused = 0
        for iteration in 0..<100_000 {
            let useBatch = iteration % 10 == 9 && !batches.isEmpty
            if useBatch {
                let input = mutate(batches[Int.random(in: 0..<batches.count, using: &rng)], using: &rng)
                var buffer = ByteBuffer(bytes: input)
                do {
                    while let batch = try RecordBatch.read(from: &buffer) {
                        try batch.validate()
                        _ = try batch.records(decompressionLimit: 1 << 20)
                    }
                    decoded += 1
                } catch {
                    refused += 1
                }
                continue
            }
            let (fixture, original) = frames[Int.random(in: 0..<frames.count, using: &rng)]
            let input = mutate(original, using: &rng)
            let buffer = ByteBuffer(bytes: input)
            do {
                if fixture.kind == "request" {
                    let frame = try RequestFrame(parsing: buffer)
                    let body = try frame.decodeBody()
                    // Whatever decodes must also encode without trapping.
                    _ = try? reencodeRequest(frame, body: body)
                } else if let key = APIKey(rawValue: fixture.apiKey) {
                    let decoded = try ResponseFrame.decode(buffer, apiKey: key, version: fixture.apiVersion)
                    var out = ByteBuffer()
                    try? decoded.body.write(to: &out, version: fixture.apiVersion)
                }
                decoded += 1
            } catch {
                refused += 1
            }
        }
        #expect(decoded + refused == 100_000)
        #expect(refused > 10_000, "most mutations should be refused (decoded \(decoded), refused \(refused))")
    }

    @Test("random bytes as request frames are refused, not trapped on")
    func randomFrames() {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<20_000 {
            let length = Int.random(in: 0...64, using: &rng)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if bytes.count >= 4 {
                // Aim at real API keys and versions so bodies get decoded, not just headers.
                bytes[0] = 0
                bytes[1] = UInt8.random(in: 0...75, using: &rng)
                bytes[2] = 0
                bytes[3] = UInt8.random(in: 0...16, using: &rng)
            }
            if let frame = try? RequestFrame(parsing: ByteBuffer(bytes: bytes)) {
                _ = try? frame.decodeBody()
            }
        }
    }
}
