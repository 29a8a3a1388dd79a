/*
 * CRC32C (Castagnoli: polynomial 0x1EDC6F41, bit-reflected 0x82F63B78, initial value and final
 * XOR 0xFFFFFFFF), the checksum of Kafka's RecordBatch v2.
 *
 * All three functions are thread-safe and may be called from any thread at any time (there is no
 * set-up call). `buf` may be unaligned, and may be NULL when `len` is 0.
 */
#ifndef CFJORD_CRC32C_H
#define CFJORD_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Extends a CRC32C: `crc` is a previous finished CRC32C value (0 to start); returns the finished CRC32C of the previous bytes followed by `buf[0..<len]`. Same convention as Python's `crc32c.crc32c(data, value)` and Kafka's Crc32C.
uint32_t fjord_crc32c_update(uint32_t crc, const void *buf, size_t len);

/// The same computed without CPU CRC instructions (slicing-by-8 tables); for tests and as the fallback.
uint32_t fjord_crc32c_update_portable(uint32_t crc, const void *buf, size_t len);

/// 1 when fjord_crc32c_update uses the CPU's CRC32C instruction on this machine, 0 otherwise.
int fjord_crc32c_is_hardware_accelerated(void);

#ifdef __cplusplus
}
#endif

#endif /* CFJORD_CRC32C_H */
