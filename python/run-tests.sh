#!/usr/bin/env bash
# The Python package's tests: a venv in target/py-venv (made once, then reused) with pytest,
# pyzmq and the package, then pytest python/tests against a real burrow binary
# ($BURROW_BIN, default target/debug/burrow). Extra arguments go to pytest, e.g.
#   python/run-tests.sh -m 'not needs_forwarding'
# `python/run-tests.sh --venv` only makes the venv (the Rust lab tests run pyzmq from it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=target/py-venv
python=/usr/bin/python3

if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    if [[ $(id -u) == 0 ]]; then
        echo "installing python3-venv"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    else
        echo "error: $python has no venv module: install python3-venv (as root: apt-get install python3-venv)" >&2
        exit 1
    fi
fi
if [[ ! -x $venv/bin/python ]]; then
    mkdir -p target
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check pytest pyzmq
"$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./python
[[ ${1:-} == --venv ]] && exit 0

export BURROW_BIN=${BURROW_BIN:-$root/target/debug/burrow}
if [[ ! -x $BURROW_BIN ]]; then
    echo "error: no burrow binary at $BURROW_BIN: build it (cargo build -p burrow-cli) or set BURROW_BIN" >&2
    exit 1
fi
# From the repo's root, so that the tests import the installed package, not python/burrow.
exec "$venv/bin/python" -m pytest python/tests "$@"
