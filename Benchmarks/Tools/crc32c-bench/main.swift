// Prints Fjord's CRC32C throughput over a 1 MiB buffer in GB/s (best of 7 half-second runs),
// for tools/bench crc32c, which compares it with the crc32c Python package in the same run.
import FjordProtocol
import Foundation

let buffer: [UInt8] = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
var best = 0.0
var sink: UInt32 = 0
for _ in 0..<7 {
    var count = 0
    let start = DispatchTime.now().uptimeNanoseconds
    var elapsed: UInt64 = 0
    while elapsed < 500_000_000 {
        buffer.withUnsafeBytes { sink ^= CRC32C.checksum($0) }
        count += 1
        elapsed = DispatchTime.now().uptimeNanoseconds - start
    }
    best = max(best, Double(count * buffer.count) / Double(elapsed))
}
precondition(CRC32C.isHardwareAccelerated || sink != 1)
print(String(format: "%.3f", best))
