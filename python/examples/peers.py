#!/usr/bin/env python3
"""List the mesh's other members as this machine's `burrow up` reaches them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import burrow
from burrow.sync import Mesh


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--socket", help="the daemon's socket [default: from XDG_RUNTIME_DIR]")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    try:
        with Mesh(socket=args.socket) as mesh:
            peers = mesh.peers()
    except burrow.BurrowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([dataclasses.asdict(p) for p in peers]))
        return 0
    print(f"{'NAME':<16} {'ONLINE':<7} {'PATH':<7} {'ADDRESS':<28} {'RTT':>8}")
    for p in peers:
        rtt = f"{p.rtt_ms:.1f}ms" if p.rtt_ms is not None else "-"
        print(f"{p.name:<16} {'yes' if p.online else 'no':<7} {p.path or '-':<7} "
              f"{p.remote_addr or '-':<28} {rtt:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
