# Shared helpers for tools/fjord, tools/test and tools/bench. Source it; do not run it.

FJORD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FJORD_VENV="${FJORD_VENV:-$FJORD_ROOT/.venv}"

# The Debian packages Fjord builds against (system libraries of FjordCompression).
FJORD_BUILD_PACKAGES=(zlib1g-dev liblz4-dev libzstd-dev libsnappy-dev libsqlite3-dev)
# What the tests drive besides the build: real Kafka clients, a Python for the virtualenv, and etcd
# (the cluster tests start their own on loopback ports).
FJORD_TEST_PACKAGES=(kcat python3 python3-venv python3-pip etcd-server postgresql)

log() { printf '==> %s\n' "$*" >&2; }

# Installs the given Debian packages when any is missing (apt-get; sudo when not root).
ensure_debian_packages() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null; then sudo=(sudo); else
            echo "error: need root (or sudo) to install: ${missing[*]}" >&2
            return 1
        fi
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Creates (or refreshes) the test virtualenv from tools/requirements.txt.
ensure_venv() {
    local stamp="$FJORD_VENV/.requirements.sha256"
    local want
    want="$(sha256sum "$FJORD_ROOT/tools/requirements.txt" | cut -d' ' -f1)"
    if [ -x "$FJORD_VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    log "creating the test virtualenv in $FJORD_VENV"
    python3 -m venv "$FJORD_VENV"
    "$FJORD_VENV/bin/pip" install -q --disable-pip-version-check -r "$FJORD_ROOT/tools/requirements.txt"
    echo "$want" > "$stamp"
}

require_swift() {
    if ! command -v swift >/dev/null; then
        echo "error: the Swift toolchain is not on PATH (Fjord needs Swift 6.1 or later)" >&2
        exit 1
    fi
}

# Runs `swift test --skip-build`, its output shown and kept in $1. When the output has not grown
# for $2 seconds, the test process's threads (gdb, when installed) and open descriptors go to
# .build/swift-test-stall.txt, the run is killed, and the function fails (exit 124).
run_swift_tests_with_watchdog() {
    local output="$1" stall="$2"
    : > "$output"
    swift test --skip-build > >(tee -a "$output") 2>&1 &
    local runner=$!
    local last_size=-1 quiet=0
    while kill -0 "$runner" 2>/dev/null; do
        sleep 5
        local size
        size=$(stat -c %s "$output" 2>/dev/null || echo 0)
        if [ "$size" = "$last_size" ]; then quiet=$((quiet + 5)); else quiet=0; last_size=$size; fi
        if [ "$quiet" -ge "$stall" ]; then
            local dump="$FJORD_ROOT/.build/swift-test-stall.txt" pid
            pid=$(pgrep -f 'PackageTests.xctest' | head -1 || true)
            {
                echo "swift test printed nothing for ${stall}s; tests started and not finished:"
                grep -o '◇ Test "[^"]*" started' "$output" | sed 's/ started$//;s/^◇ //' | sort > "$output.started" || true
                grep -oE '[✔✘] Test "[^"]*"' "$output" | sed 's/^..//' | sort -u > "$output.ended" || true
                comm -23 "$output.started" "$output.ended" || true
                if [ -n "$pid" ]; then
                    echo "--- descriptors of $pid"; ls -l "/proc/$pid/fd" 2>/dev/null || true
                    if command -v gdb >/dev/null; then
                        echo "--- threads"; timeout 120 gdb -p "$pid" -batch -ex "thread apply all bt 15" 2>/dev/null | grep -E '^(Thread|#)' || true
                    fi
                fi
            } > "$dump" 2>&1
            echo "tools/test: swift test stalled for ${stall}s; see $dump" >&2
            cat "$dump" | head -40 >&2
            # The test process's own children (etcd, fjord serve) go with it.
            [ -n "$pid" ] && pkill -KILL -P "$pid" || true
            pkill -f 'PackageTests.xctest' || true
            kill "$runner" 2>/dev/null || true
            wait "$runner" 2>/dev/null || true
            return 124
        fi
    done
    wait "$runner"
}
