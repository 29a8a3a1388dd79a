internal import CFjordCRC32C
public import NIOCore

/// CRC32C (Castagnoli), the checksum of Kafka's RecordBatch v2.
///
/// Runs on the CPU's CRC32C instruction (SSE4.2 on x86_64, ARMv8 CRC on arm64) when the
/// machine has it, else on a portable slicing-by-8 table; both give identical results.
/// Values follow Kafka's `Crc32C`: the finished CRC, starting from 0.
public enum CRC32C {
    /// True when checksums run on the CPU's CRC32C instruction.
    public static var isHardwareAccelerated: Bool { fjord_crc32c_is_hardware_accelerated() != 0 }

    /// The CRC32C of `bytes`, continuing from a previous finished value `crc` (0 to start).
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        update(crc, bytes)
    }

    /// The CRC32C of the readable bytes of `buffer`.
    @inlinable
    public static func checksum(_ buffer: ByteBuffer, continuing crc: UInt32 = 0) -> UInt32 {
        buffer.withUnsafeReadableBytes { update(crc, $0) }
    }

    /// The CRC32C of `bytes` with the portable table implementation (for tests and benchmarks).
    public static func portableChecksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        fjord_crc32c_update_portable(crc, bytes.baseAddress, bytes.count)
    }

    @usableFromInline
    static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        fjord_crc32c_update(crc, bytes.baseAddress, bytes.count)
    }
}
