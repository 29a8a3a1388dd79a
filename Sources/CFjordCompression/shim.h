// Debian's compression libraries, used by FjordCompression:
// zlib1g-dev (gzip), libsnappy-dev, liblz4-dev (frame format), libzstd-dev.
#ifndef CFJORD_COMPRESSION_SHIM_H
#define CFJORD_COMPRESSION_SHIM_H
#include <zlib.h>
#include <snappy-c.h>
#include <lz4frame.h>
#include <zstd.h>
#endif
