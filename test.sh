#!/usr/bin/env bash
# burrow's whole test suite: formatting, lints, unit, integration and NAT-lab tests.
# The NAT lab needs root; without root its tests skip and say so (in CI, where CI=true, they
# must run, and a skip is a failure).
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
command -v ipset >/dev/null || need+=(ipset)
command -v turnserver >/dev/null || need+=(coturn)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx) # relay-behind-proxy test
[[ -x /usr/bin/chromium ]] || need+=(chromium) # relay-from-a-browser test
# libtorrent, an independent DHT (the dht_libtorrent tests); Debian's own python imports it.
/usr/bin/python3 -c 'import libtorrent' 2>/dev/null || need+=(python3-libtorrent)
if ((${#need[@]})); then
    if [[ $(id -u) == 0 ]]; then
        echo "installing test dependencies: ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "note: missing ${need[*]}: the tests that need them will skip (run as root to install them)"
    fi
fi

cargo fmt --all --check
# With every feature the tests use: `webrtc` (str0m) is off by default, so a build without it
# is checked too.
cargo clippy --workspace --all-targets --locked --features burrow-cli/webrtc -- -D warnings
cargo check -p burrow-cli --locked
# The fuzz crate is outside the workspace (so normal builds never compile libFuzzer): check
# that its targets still compile against the parsers they drive.
cargo check --manifest-path fuzz/Cargo.toml --locked --bins
# burrow-proto is sans-IO (its clippy.toml, checked by clippy above, keeps clocks, threads, OS
# randomness and sockets out of its code): no runtime, event loop or socket crate either.
if cargo tree -p burrow-proto -e normal --prefix none --locked | grep -E '^(tokio|mio|socket2) v'; then
    echo "burrow-proto's normal dependencies must not include tokio, mio or socket2: it is sans-IO" >&2
    exit 1
fi
# The relay server stands on its own: neither the client library nor its QUIC, DHT and mDNS.
if cargo tree -p burrow-relay -e normal --prefix none --locked | grep -E '^(burrow|quinn|mainline|mdns-sd) v'; then
    echo "burrow-relay's normal dependencies must not include these" >&2
    exit 1
fi
# A client-only `burrow` (no `server` feature: no relay, stun or dht-node) links no server.
if cargo tree -p burrow-cli --no-default-features -e normal --prefix none --locked | grep -E '^(burrow-relay|axum) v'; then
    echo "a client-only burrow-cli must not link these" >&2
    exit 1
fi
cargo check -p burrow-cli --no-default-features --locked
# WebRTC stays on the workspace's ring and RustCrypto: no C crypto build (the str0m-rust-crypto
# patch keeps aws-lc out).
if cargo tree -p burrow-cli --features webrtc -e normal --prefix none --locked | grep -E '^(aws-lc-sys|aws-lc-rs|openssl-sys) v'; then
    echo "burrow's webrtc feature must not build aws-lc or OpenSSL" >&2
    exit 1
fi
# A venv with pytest, pyzmq and the Python package (target/py-venv): the NAT lab's ZeroMQ test
# runs its agents with it, and the Python tests below run in it.
python/run-tests.sh --venv
cargo test --workspace --locked --features burrow-cli/webrtc
python/run-tests.sh
