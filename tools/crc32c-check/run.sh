#!/usr/bin/env bash
# Standalone check of the CRC32C kernel in Sources/CFjordCRC32C, built with plain clang/gcc
# (no SwiftPM). Single-threaded compiles; everything is written under $OUT.
#
#   tools/crc32c-check/run.sh                 all steps below
#   tools/crc32c-check/run.sh --no-python     skip the Python crc32c cross-check and comparison
#   tools/crc32c-check/run.sh --write-tables  regenerate the table block of crc32c.c, then stop
#
# Steps: the generated tables in crc32c.c match the generator; crc32c.c compiles warning-free
# (clang and gcc, -std=c11 -Wall -Wextra -Wpedantic -Werror, with and without the hardware path);
# check.c's tests pass built with clang and with gcc at -O2, with the hardware path disabled, and
# under ASan+UBSan; on arm64 under qemu when an aarch64 cross gcc and qemu-aarch64 are installed;
# CRCs agree with Python's crc32c package; throughput on 1 MiB vs that package.
#
# Environment: CC_CLANG (default clang), CC_GCC (default gcc), OUT (default
# ${TMPDIR:-/tmp}/fjord-crc32c-check), CRC32C_VENV (default /tmp/crcvenv: a throwaway virtualenv
# that gets crc32c==2.9.post0 from PyPI if it doesn't have it).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SRC="$ROOT/Sources/CFjordCRC32C"
INC="$SRC/include"
CC_CLANG="${CC_CLANG:-clang}"
CC_GCC="${CC_GCC:-gcc}"
OUT="${OUT:-${TMPDIR:-/tmp}/fjord-crc32c-check}"
VENV="${CRC32C_VENV:-/tmp/crcvenv}"
WARN=(-std=c11 -Wall -Wextra -Wpedantic -Werror)
mkdir -p "$OUT"

passed=0
failed=0
step() { # step NAME COMMAND...: run, log to $OUT/NAME.log, count
    local name="$1"
    shift
    if "$@" >"$OUT/$name.log" 2>&1; then
        passed=$((passed + 1))
        printf 'ok    %s\n' "$name"
    else
        failed=$((failed + 1))
        printf 'FAIL  %s (log: %s)\n' "$name" "$OUT/$name.log"
        tail -n 20 "$OUT/$name.log" | sed 's/^/      /'
    fi
}
skip() { printf 'skip  %s: %s\n' "$1" "$2"; }

tables_match() { # the table block in crc32c.c is what the generator prints
    sed -n '/^\/\* BEGIN GENERATED TABLES \*\/$/,/^\/\* END GENERATED TABLES \*\/$/p' "$SRC/crc32c.c" >"$OUT/tables.file"
    "$OUT/check-$CC_CLANG" --print-tables >"$OUT/tables.generated" &&
        diff "$OUT/tables.generated" "$OUT/tables.file"
}

build_check() { # build_check OUTPUT COMPILER FLAGS...
    local out="$1" cc="$2"
    shift 2
    "$cc" "${WARN[@]}" "$@" -I"$INC" "$HERE/check.c" "$SRC/crc32c.c" -o "$out"
}

run_tests() { # run_tests EXPECTED_HW(0|1|any) COMMAND...: the tests pass, with the expected dispatch
    local want="$1" log
    shift
    log="$("$@" --no-bench 2>&1)" || { printf '%s\n' "$log"; return 1; }
    printf '%s\n' "$log"
    [[ $want == any ]] || grep -qx "hardware accelerated: $want" <<<"$log"
}

python_crosscheck() { # our CRCs equal the package's on random files of assorted sizes
    "$VENV/bin/python" - "$OUT/xcheck" <<'EOF' || return 1
import os, sys
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
for n in (0, 1, 7, 9, 63, 255, 767, 768, 4097, 24575, 24576, 100003, (1 << 20) + 5, 3 << 20):
    with open(os.path.join(d, 'f%d' % n), 'wb') as f:
        f.write(os.urandom(n))
EOF
    "$OUT/check-$CC_CLANG" --crc "$OUT"/xcheck/f* >"$OUT/xcheck.ours" || return 1
    "$VENV/bin/python" - "$OUT/xcheck.ours" <<'EOF'
import sys, crc32c
bad = 0
for line in open(sys.argv[1]):
    crc, n, path = line.split()
    data = open(path, 'rb').read()
    theirs = crc32c.crc32c(data)
    # and the incremental form: crc32c(tail, crc32c(head))
    inc = crc32c.crc32c(data[len(data) // 3:], crc32c.crc32c(data[:len(data) // 3]))
    ok = int(crc, 16) == theirs == inc and int(n) == len(data)
    bad += not ok
    print(('ok  ' if ok else 'BAD ') + 'ours %s theirs %08x length %s' % (crc, theirs, n))
sys.exit(1 if bad else 0)
EOF
}

if [[ "${1:-}" == "--write-tables" ]]; then
    build_check "$OUT/check-gen" "$CC_CLANG" -O2 || exit 1
    "$OUT/check-gen" --print-tables >"$OUT/tables.inc" || exit 1
    awk -v inc="$OUT/tables.inc" '
        /^\/\* BEGIN GENERATED TABLES \*\/$/ { while ((getline l < inc) > 0) print l; skip = 1; next }
        /^\/\* END GENERATED TABLES \*\/$/ { skip = 0; next }
        !skip { print }' "$SRC/crc32c.c" >"$OUT/crc32c.c.new" && mv "$OUT/crc32c.c.new" "$SRC/crc32c.c"
    echo "rewrote the table block of $SRC/crc32c.c"
    exit 0
fi
with_python=1
[[ "${1:-}" == "--no-python" ]] && with_python=0

echo "== builds and tests (logs in $OUT)"
for cc in "$CC_CLANG" "$CC_GCC"; do
    step "warnings-$cc" "$cc" "${WARN[@]}" -O2 -I"$INC" -c "$SRC/crc32c.c" -o "$OUT/crc32c-$cc.o"
    step "warnings-$cc-nohw" "$cc" "${WARN[@]}" -O2 -I"$INC" -DFJORD_CRC32C_DISABLE_HW -c "$SRC/crc32c.c" -o "$OUT/crc32c-nohw-$cc.o"
    step "build-$cc" build_check "$OUT/check-$cc" "$cc" -O2
done
step tables-match tables_match
for cc in "$CC_CLANG" "$CC_GCC"; do
    step "tests-$cc" run_tests any "$OUT/check-$cc"
done
step build-nohw build_check "$OUT/check-nohw" "$CC_CLANG" -O2 -DFJORD_CRC32C_DISABLE_HW
step tests-nohw run_tests 0 "$OUT/check-nohw"
step build-sanitizers build_check "$OUT/check-san" "$CC_CLANG" -O1 -g -fno-omit-frame-pointer \
    -fsanitize=address,undefined -fno-sanitize-recover=all
step tests-sanitizers run_tests any "$OUT/check-san"

# arm64, emulated: default -march (CRC found at run time via AT_HWCAP) and +crc (compile time).
if command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null; then
    for variant in runtime:-march=armv8-a compiletime:-march=armv8-a+crc; do
        name="${variant%%:*}"
        flag="${variant#*:}"
        step "build-arm64-gcc-$name" build_check "$OUT/check-arm64-gcc-$name" aarch64-linux-gnu-gcc -O2 "$flag"
        step "tests-arm64-gcc-$name" run_tests 1 qemu-aarch64 -L /usr/aarch64-linux-gnu "$OUT/check-arm64-gcc-$name"
        step "build-arm64-clang-$name" build_check "$OUT/check-arm64-clang-$name" "$CC_CLANG" \
            --target=aarch64-linux-gnu -O2 "$flag"
        step "tests-arm64-clang-$name" run_tests 1 qemu-aarch64 -L /usr/aarch64-linux-gnu "$OUT/check-arm64-clang-$name"
    done
else
    skip arm64 "needs aarch64-linux-gnu-gcc and qemu-aarch64 (Debian: gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)"
fi

echo "== throughput (1 MiB buffer; best of repeated ~20 ms runs)"
"$OUT/check-$CC_CLANG" --bench | tee "$OUT/bench-clang.txt"
hw=$(sed -n 's/^RESULT hw_gbps=\([0-9.]*\) .*/\1/p' "$OUT/bench-clang.txt")
sw=$(sed -n 's/^RESULT .*portable_gbps=\([0-9.]*\).*/\1/p' "$OUT/bench-clang.txt")
echo "gcc build:"
"$OUT/check-$CC_GCC" --bench | grep -E '^1 MiB'

if [[ $with_python == 1 ]]; then
    echo "== Python crc32c package ($VENV)"
    if ! "$VENV/bin/python" -c 'import crc32c' 2>/dev/null; then
        { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'crc32c==2.9.post0'; } >"$OUT/venv.log" 2>&1 ||
            { echo "could not set up $VENV (log: $OUT/venv.log)"; with_python=0; failed=$((failed + 1)); }
    fi
fi
if [[ $with_python == 1 ]]; then
    step python-crosscheck python_crosscheck
    "$VENV/bin/python" - "$hw" <<'EOF' | tee "$OUT/bench-python.txt"
import os, sys, timeit, statistics, crc32c
ours = float(sys.argv[1])
size = 1 << 20
buf = os.urandom(size)
number = 200  # ~10 ms per run at 20 GB/s
rates = sorted(size * number / t / 1e9 for t in timeit.repeat(lambda: crc32c.crc32c(buf), number=number, repeat=25))
best, median = rates[-1], statistics.median(rates)
print("python crc32c %s (hardware_based=%s), 1 MiB: best %.2f GB/s, median %.2f GB/s"
      % (getattr(crc32c, '__version__', '?'), crc32c.hardware_based, best, median))
print("ratio fjord_crc32c_update / python crc32c (best vs best): %.2fx" % (ours / best))
EOF
fi

echo "== summary"
echo "fjord_crc32c_update: $hw GB/s, fjord_crc32c_update_portable: $sw GB/s (1 MiB, clang -O2)"
echo "run.sh: $passed passed, $failed failed"
[[ $failed == 0 ]]
