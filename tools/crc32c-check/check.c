/*
 * Standalone check of Sources/CFjordCRC32C (built and run by run.sh, without SwiftPM).
 *
 *   check                 all tests, then the throughput benchmark
 *   check --no-bench      tests only
 *   check --bench         benchmark only
 *   check --crc FILE...   print "<crc32c hex> <length> <file>" per file (via fjord_crc32c_update,
 *                         after checking it equals the portable and bitwise results)
 *   check --print-tables  print the generated-tables block of crc32c.c, computed here from the
 *                         polynomial bit by bit (run.sh diffs it against the file)
 *
 * The tests compare fjord_crc32c_update (hardware where the CPU has it) and
 * fjord_crc32c_update_portable with each other and with a bit-at-a-time reference written from
 * the definition, on known-answer vectors, every length 0..4096 at random alignments, split and
 * chunked inputs, inputs that end or start at an inaccessible page, block-size boundaries of the
 * hardware path, and MiB-sized buffers. The last line is "N passed, N failed".
 */
#if !defined(_DEFAULT_SOURCE)
#  define _DEFAULT_SOURCE 1 /* clock_gettime, mmap's MAP_ANONYMOUS under -std=c11 on glibc */
#endif

#include "CFjordCRC32C.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#if !defined(MAP_ANONYMOUS) && defined(MAP_ANON)
#  define MAP_ANONYMOUS MAP_ANON
#endif

#define POLY 0x82F63B78u /* reflected Castagnoli polynomial */
#define LONG_BLOCK 8192  /* must match FJORD_CRC32C_LONG in crc32c.c */
#define SHORT_BLOCK 256  /* must match FJORD_CRC32C_SHORT in crc32c.c */

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

/* ----------------------------------------------------------------------------------------- */
/* Reference, randomness, bookkeeping.                                                        */

/* Bit at a time, straight from the definition. */
static uint32_t ref_crc32c(uint32_t crc, const void *buf, size_t len) {
    const unsigned char *p = buf;
    uint32_t reg = ~crc;
    for (size_t i = 0; i < len; i++) {
        reg ^= p[i];
        for (int k = 0; k < 8; k++) {
            reg = (reg >> 1) ^ (POLY & (0u - (reg & 1u)));
        }
    }
    return ~reg;
}

static uint64_t rng_state = 0x5EEDF00DCAFEBABEull;

static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t rnd_below(size_t n) { /* n > 0 */
    return (size_t)(rnd() % n);
}

static void fill_random(unsigned char *p, size_t len) {
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v = rnd();
        memcpy(p + i, &v, 8);
    }
    for (; i < len; i++) {
        p[i] = (unsigned char)rnd();
    }
}

static uint32_t random_seed_crc(void) { /* half the time start from 0, as a fresh CRC does */
    return (rnd() & 1) ? 0 : (uint32_t)rnd();
}

static unsigned long passed, failed;

static void expect_eq(uint32_t got, uint32_t want, const char *what, size_t len, size_t detail) {
    if (got == want) {
        passed++;
        return;
    }
    failed++;
    if (failed <= 25) {
        fprintf(stderr, "FAIL %s: len=%zu (%zu): got 0x%08" PRIx32 ", want 0x%08" PRIx32 "\n",
                what, len, detail, got, want);
    }
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* ----------------------------------------------------------------------------------------- */
/* Tests.                                                                                     */

/* Both implementations, one-shot and byte by byte, against the expected and reference value. */
static void check_vector(const char *name, const void *data, size_t len, uint32_t want) {
    const unsigned char *p = data;
    expect_eq(ref_crc32c(0, p, len), want, name, len, 0);
    expect_eq(fjord_crc32c_update(0, p, len), want, name, len, 1);
    expect_eq(fjord_crc32c_update_portable(0, p, len), want, name, len, 2);
    uint32_t a = 0, b = 0;
    for (size_t i = 0; i < len; i++) {
        a = fjord_crc32c_update(a, p + i, 1);
        b = fjord_crc32c_update_portable(b, p + i, 1);
    }
    expect_eq(a, want, name, len, 3);
    expect_eq(b, want, name, len, 4);
}

static void test_known_answers(void) {
    unsigned char zeros[32], ones[32], inc[32], dec[32];
    for (int i = 0; i < 32; i++) {
        zeros[i] = 0;
        ones[i] = 0xFF;
        inc[i] = (unsigned char)i;
        dec[i] = (unsigned char)(31 - i);
    }
    /* RFC 3720 (iSCSI) B.4: a SCSI Read(10) command PDU. */
    static const unsigned char iscsi_read[48] = {
        0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    };
    static const char fox[] = "The quick brown fox jumps over the lazy dog";

    check_vector("empty", "", 0, 0x00000000u);
    check_vector("\"a\"", "a", 1, 0xC1D04330u);
    check_vector("\"123456789\"", "123456789", 9, 0xE3069283u);
    check_vector("32 x 0x00", zeros, 32, 0x8A9136AAu);
    check_vector("32 x 0xFF", ones, 32, 0x62A8AB43u);
    check_vector("0x00..0x1F", inc, 32, 0x46DD794Eu);
    check_vector("0x1F..0x00", dec, 32, 0x113FDB5Cu);
    check_vector("iSCSI read PDU", iscsi_read, sizeof iscsi_read, 0xD9963A56u);
    check_vector("quick brown fox", fox, sizeof fox - 1, 0x22620404u);

    /* Incremental over a split equals one-shot: "1234" then "56789". */
    expect_eq(fjord_crc32c_update(fjord_crc32c_update(0, "1234", 4), "56789", 5), 0xE3069283u,
              "split \"123456789\"", 9, 0);
    expect_eq(fjord_crc32c_update_portable(fjord_crc32c_update_portable(0, "1234", 4), "56789", 5),
              0xE3069283u, "split \"123456789\" portable", 9, 0);

    /* Empty input, with or without a pointer, leaves the CRC unchanged. */
    expect_eq(fjord_crc32c_update(0x12345678u, NULL, 0), 0x12345678u, "NULL, 0", 0, 0);
    expect_eq(fjord_crc32c_update_portable(0x12345678u, NULL, 0), 0x12345678u, "NULL, 0 portable", 0, 0);
    expect_eq(fjord_crc32c_update(0xE3069283u, "x", 0), 0xE3069283u, "empty", 0, 0);
}

/* One buffer: all implementations, one-shot and split in two and three, mixed. */
static void check_buffer(const unsigned char *p, size_t len, int with_reference, const char *what) {
    uint32_t seed = random_seed_crc();
    uint32_t want = fjord_crc32c_update_portable(seed, p, len);
    if (with_reference) {
        expect_eq(want, ref_crc32c(seed, p, len), what, len, 0);
    }
    expect_eq(fjord_crc32c_update(seed, p, len), want, what, len, 1);

    size_t k = rnd_below(len + 1);
    expect_eq(fjord_crc32c_update(fjord_crc32c_update(seed, p, k), p + k, len - k), want, what, len, 2);
    expect_eq(fjord_crc32c_update_portable(fjord_crc32c_update_portable(seed, p, k), p + k, len - k),
              want, what, len, 3);
    expect_eq(fjord_crc32c_update_portable(fjord_crc32c_update(seed, p, k), p + k, len - k), want,
              what, len, 4);

    size_t k1 = rnd_below(len + 1), k2 = rnd_below(len + 1);
    if (k1 > k2) {
        size_t t = k1;
        k1 = k2;
        k2 = t;
    }
    uint32_t c = fjord_crc32c_update(seed, p, k1);
    c = fjord_crc32c_update(c, p + k1, k2 - k1);
    c = fjord_crc32c_update(c, p + k2, len - k2);
    expect_eq(c, want, what, len, 5);
}

/* Every length 0..4096, each in its own exact-size allocation (so ASan sees any over-read) at a
 * random offset 0..63 from the allocation's (aligned) start. */
static void test_all_lengths(void) {
    for (size_t len = 0; len <= 4096; len++) {
        size_t offset = rnd_below(64);
        unsigned char *block = xmalloc(offset + len);
        fill_random(block + offset, len);
        check_buffer(block + offset, len, 1, "length sweep");
        free(block);
    }
}

/* Inputs that end right before, or start right after, an inaccessible page. */
static void test_guard_pages(void) {
    long page_size = sysconf(_SC_PAGESIZE);
    size_t page = page_size > 0 ? (size_t)page_size : 4096;
    size_t span = 4 * page; /* guard | 2 accessible pages | guard */
    unsigned char *m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        fprintf(stderr, "note: mmap failed, guard-page test skipped\n");
        return;
    }
    if (mprotect(m, page, PROT_NONE) != 0 || mprotect(m + 3 * page, page, PROT_NONE) != 0) {
        fprintf(stderr, "note: mprotect failed, guard-page test skipped\n");
        munmap(m, span);
        return;
    }
    unsigned char *lo = m + page, *hi = m + 3 * page;
    fill_random(lo, 2 * page);
    size_t max_len = 2 * page;
    for (size_t len = 0; len <= max_len; len += (len < 1100 ? 1 : 61)) {
        check_buffer(hi - len, len, len <= 2048, "ends at guard page");
        size_t offset = len < max_len ? rnd_below(max_len - len < 16 ? max_len - len + 1 : 16) : 0;
        check_buffer(lo + offset, len, 0, "starts near guard page");
    }
    munmap(m, span);
}

/* Lengths around the hardware path's block sizes, at every alignment mod 8. */
static void test_block_boundaries(void) {
    static const size_t bases[] = {
        3 * SHORT_BLOCK, 2 * 3 * SHORT_BLOCK, 3 * 3 * SHORT_BLOCK,
        3 * LONG_BLOCK, 3 * LONG_BLOCK + 3 * SHORT_BLOCK, 2 * 3 * LONG_BLOCK,
        3 * LONG_BLOCK + 3 * SHORT_BLOCK - 1 + 8,
    };
    size_t max = 2 * 3 * LONG_BLOCK + 64;
    unsigned char *buf = xmalloc(max + 16);
    fill_random(buf, max + 16);
    for (size_t b = 0; b < sizeof bases / sizeof bases[0]; b++) {
        for (size_t len = bases[b] - 17; len <= bases[b] + 17; len++) {
            for (size_t align = 0; align < 8; align++) {
                check_buffer(buf + align, len, bases[b] < 4096, "block boundary");
            }
        }
    }
    free(buf);
}

/* Many inputs long enough for LONG blocks, so that every entry of the LONG shift table is used
 * (each block applies it three times to a random-looking register: 2000 blocks leave a given
 * entry unused with probability about (255/256)^6000, i.e. never). */
static void test_long_blocks(void) {
    size_t max = 3 * LONG_BLOCK + 4 * LONG_BLOCK;
    unsigned char *buf = xmalloc(max + 64);
    for (int i = 0; i < 2000; i++) {
        size_t len = 3 * LONG_BLOCK + rnd_below(4 * LONG_BLOCK);
        size_t offset = rnd_below(64);
        fill_random(buf + offset, len);
        uint32_t seed = random_seed_crc();
        expect_eq(fjord_crc32c_update(seed, buf + offset, len),
                  fjord_crc32c_update_portable(seed, buf + offset, len), "long blocks", len, offset);
    }
    free(buf);
}

/* MiB-sized buffers: one-shot, and fed in random chunks. */
static void test_large(void) {
    static const size_t sizes[] = {(size_t)1 << 20, ((size_t)1 << 20) + 3, ((size_t)3 << 20) + 1234,
                                   ((size_t)7 << 20) - 5, (size_t)16 << 20};
    size_t max = (size_t)16 << 20;
    unsigned char *buf = xmalloc(max + 8);
    fill_random(buf, max + 8);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t len = sizes[i], offset = i % 8;
        const unsigned char *p = buf + offset;
        uint32_t want = fjord_crc32c_update_portable(0, p, len);
        if (i == 0) {
            expect_eq(want, ref_crc32c(0, p, len), "1 MiB vs reference", len, offset);
        }
        expect_eq(fjord_crc32c_update(0, p, len), want, "large one-shot", len, offset);
        uint32_t a = 0, b = 0;
        for (size_t done = 0; done < len;) {
            size_t n = 1 + rnd_below(i % 2 ? 100000 : 5000);
            if (n > len - done) {
                n = len - done;
            }
            a = fjord_crc32c_update(a, p + done, n);
            b = fjord_crc32c_update_portable(b, p + done, n);
            done += n;
        }
        expect_eq(a, want, "large chunked", len, offset);
        expect_eq(b, want, "large chunked portable", len, offset);
    }
    free(buf);
}

static int run_tests(void) {
    printf("hardware accelerated: %d\n", fjord_crc32c_is_hardware_accelerated());
    test_known_answers();
    test_all_lengths();
    test_guard_pages();
    test_block_boundaries();
    test_long_blocks();
    test_large();
    /* the decision is cached and stable */
    int hw = fjord_crc32c_is_hardware_accelerated();
    expect_eq((uint32_t)fjord_crc32c_is_hardware_accelerated(), (uint32_t)hw, "stable dispatch", 0, 0);
    printf("%lu passed, %lu failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

/* ----------------------------------------------------------------------------------------- */
/* Benchmark.                                                                                 */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static volatile uint32_t bench_sink;

/* GB/s (1e9 bytes per second): the best of `trials` timed runs of about 20 ms each, and the median. */
static double bench(crc_fn fn, const unsigned char *p, size_t len, int trials, double *median) {
    uint32_t acc = 0;
    size_t iters = 1;
    for (;;) { /* calibrate */
        double t0 = now_seconds();
        for (size_t i = 0; i < iters; i++) {
            acc = fn(acc, p, len);
        }
        double t = now_seconds() - t0;
        if (t >= 0.02 || iters >= ((size_t)1 << 30)) {
            break;
        }
        iters *= (t < 0.002) ? 10 : 2;
    }
    double rates[64];
    if (trials > 64) {
        trials = 64;
    }
    for (int t = 0; t < trials; t++) {
        double t0 = now_seconds();
        for (size_t i = 0; i < iters; i++) {
            acc = fn(acc, p, len);
        }
        double dt = now_seconds() - t0;
        rates[t] = (double)len * (double)iters / dt / 1e9;
    }
    bench_sink = acc;
    qsort(rates, (size_t)trials, sizeof rates[0], compare_doubles);
    if (median) {
        *median = rates[trials / 2];
    }
    return rates[trials - 1];
}

static void run_bench(void) {
    size_t mib = (size_t)1 << 20;
    unsigned char *buf = xmalloc(mib + 64);
    fill_random(buf, mib + 64);
    printf("hardware accelerated: %d\n", fjord_crc32c_is_hardware_accelerated());
    double med_hw, med_sw, med_un;
    double hw = bench(fjord_crc32c_update, buf, mib, 25, &med_hw);
    double sw = bench(fjord_crc32c_update_portable, buf, mib, 9, &med_sw);
    double un = bench(fjord_crc32c_update, buf + 3, mib, 9, &med_un);
    printf("1 MiB fjord_crc32c_update:          best %6.2f GB/s, median %6.2f GB/s\n", hw, med_hw);
    printf("1 MiB fjord_crc32c_update (ptr+3):  best %6.2f GB/s, median %6.2f GB/s\n", un, med_un);
    printf("1 MiB fjord_crc32c_update_portable: best %6.2f GB/s, median %6.2f GB/s\n", sw, med_sw);
    printf("by size (best GB/s):  %8s %8s\n", "update", "portable");
    static const size_t sizes[] = {16, 64, 256, 1024, 4096, 16384, 65536};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        double a = bench(fjord_crc32c_update, buf, sizes[i], 7, NULL);
        double b = bench(fjord_crc32c_update_portable, buf, sizes[i], 7, NULL);
        printf("  %7zu B            %8.2f %8.2f\n", sizes[i], a, b);
    }
    /* for run.sh */
    printf("RESULT hw_gbps=%.3f portable_gbps=%.3f\n", hw, sw);
    free(buf);
}

/* ----------------------------------------------------------------------------------------- */
/* --crc FILE...                                                                              */

static int crc_files(int argc, char **argv) {
    int status = 0;
    for (int i = 0; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            perror(argv[i]);
            status = 1;
            continue;
        }
        size_t cap = 1 << 16, len = 0;
        unsigned char *data = xmalloc(cap);
        size_t n;
        while ((n = fread(data + len, 1, cap - len, f)) > 0) {
            len += n;
            if (len == cap) {
                cap *= 2;
                data = realloc(data, cap);
                if (!data) {
                    fprintf(stderr, "out of memory\n");
                    exit(2);
                }
            }
        }
        fclose(f);
        uint32_t crc = fjord_crc32c_update(0, data, len);
        if (crc != fjord_crc32c_update_portable(0, data, len) || crc != ref_crc32c(0, data, len)) {
            fprintf(stderr, "%s: implementations disagree\n", argv[i]);
            status = 1;
        }
        printf("%08" PRIx32 " %zu %s\n", crc, len, argv[i]);
        free(data);
    }
    return status;
}

/* ----------------------------------------------------------------------------------------- */
/* --print-tables                                                                             */

static void print_table(const char *name, int rows, uint32_t table[][256]) {
    printf("static const uint32_t %s[%d][256] = {\n", name, rows);
    for (int k = 0; k < rows; k++) {
        printf("    {\n");
        for (int b = 0; b < 256; b++) {
            printf("%s0x%08" PRIx32 ",%s", b % 6 == 0 ? "        " : " ", table[k][b],
                   (b % 6 == 5 || b == 255) ? "\n" : "");
        }
        printf("    },\n");
    }
    printf("};\n");
}

/* table[k][b] = the register b << 8k becomes after n zero bytes. */
static void make_shift_table(uint32_t table[4][256], const uint32_t byte_table[256], size_t n) {
    for (int k = 0; k < 4; k++) {
        for (uint32_t b = 0; b < 256; b++) {
            uint32_t reg = b << (8 * k);
            for (size_t i = 0; i < n; i++) {
                reg = (reg >> 8) ^ byte_table[reg & 0xff];
            }
            table[k][b] = reg;
        }
    }
}

static void print_tables(void) {
    static uint32_t slice[8][256], shift_long[4][256], shift_short[4][256];
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t reg = b;
        for (int i = 0; i < 8; i++) {
            reg = (reg >> 1) ^ (POLY & (0u - (reg & 1u)));
        }
        slice[0][b] = reg;
    }
    for (int k = 1; k < 8; k++) {
        for (int b = 0; b < 256; b++) {
            slice[k][b] = (slice[k - 1][b] >> 8) ^ slice[0][slice[k - 1][b] & 0xff];
        }
    }
    make_shift_table(shift_long, slice[0], LONG_BLOCK);
    make_shift_table(shift_short, slice[0], SHORT_BLOCK);

    printf("/* BEGIN GENERATED TABLES */\n");
    printf("/* Written by tools/crc32c-check/run.sh --write-tables (check --print-tables). */\n\n");
    printf("/* crc32c_table[k][b]: the register after byte b then k zero bytes, from register 0. */\n");
    print_table("crc32c_table", 8, slice);
    printf("\n#if FJORD_CRC32C_HAVE_HW\n");
    printf("/* crc32c_shift_long[k][b]: the register b << 8k becomes after %d zero bytes. */\n",
           LONG_BLOCK);
    print_table("crc32c_shift_long", 4, shift_long);
    printf("\n/* crc32c_shift_short[k][b]: the register b << 8k becomes after %d zero bytes. */\n",
           SHORT_BLOCK);
    print_table("crc32c_shift_short", 4, shift_short);
    printf("#endif\n");
    printf("/* END GENERATED TABLES */\n");
}

/* ----------------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "--print-tables") == 0) {
        print_tables();
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "--crc") == 0) {
        return crc_files(argc - 2, argv + 2);
    }
    if (argc >= 2 && strcmp(argv[1], "--bench") == 0) {
        run_bench();
        return 0;
    }
    int status = run_tests();
    if (status == 0 && !(argc >= 2 && strcmp(argv[1], "--no-bench") == 0)) {
        run_bench();
    }
    return status;
}
