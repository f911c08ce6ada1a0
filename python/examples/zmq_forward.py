#!/usr/bin/env python3
"""A ZeroMQ PUB/SUB across the mesh, through an exposed port and a forward.

  zmq_forward.py pub [--port 5555]          # on one member: expose 5555, publish on it
  zmq_forward.py sub MEMBER [--port 5555]   # on another: forward to it, subscribe

Needs pyzmq (pip install pyzmq)."""

from __future__ import annotations

import argparse
import sys
import time

import burrow
from burrow.sync import Mesh


def pub(mesh: Mesh, port: int) -> None:
    import zmq

    mesh.expose(port, name="zmq")
    socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
    socket.bind(f"tcp://127.0.0.1:{port}")
    print(f"publishing on 127.0.0.1:{port}, exposed to the mesh", flush=True)
    try:
        n = 0
        while True:
            socket.send_string(f"tick {n} {time.time():.3f}")
            n += 1
            time.sleep(1)
    finally:
        mesh.unexpose(port)


def sub(mesh: Mesh, member: str, port: int) -> None:
    import zmq

    host, local = mesh.forward(member, port)
    print(f"{member}:{port} is at {host}:{local} here", flush=True)
    socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    socket.setsockopt_string(zmq.SUBSCRIBE, "")
    socket.connect(f"tcp://{host}:{local}")
    try:
        while True:
            print(socket.recv_string(), flush=True)
    finally:
        mesh.unforward((host, local))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--socket", help="the daemon's socket [default: from XDG_RUNTIME_DIR]")
    sub_parsers = parser.add_subparsers(dest="command", required=True)
    p = sub_parsers.add_parser("pub", help="expose a port and publish on it")
    p.add_argument("--port", type=int, default=5555)
    s = sub_parsers.add_parser("sub", help="forward to a member's port and subscribe")
    s.add_argument("member")
    s.add_argument("--port", type=int, default=5555)
    args = parser.parse_args()
    try:
        with Mesh(socket=args.socket) as mesh:
            if args.command == "pub":
                pub(mesh, args.port)
            else:
                sub(mesh, args.member, args.port)
    except burrow.BurrowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
