# Shared helpers for tools/fjord, tools/test and tools/bench. Source it; do not run it.

FJORD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FJORD_VENV="${FJORD_VENV:-$FJORD_ROOT/.venv}"

# The Debian packages Fjord builds against (system libraries of FjordCompression).
FJORD_BUILD_PACKAGES=(zlib1g-dev liblz4-dev libzstd-dev libsnappy-dev libsqlite3-dev)
# What the tests drive besides the build: real Kafka clients, a Python for the virtualenv, and etcd
# (the cluster tests start their own on loopback ports).
FJORD_TEST_PACKAGES=(kcat python3 python3-venv python3-pip etcd-server)

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
