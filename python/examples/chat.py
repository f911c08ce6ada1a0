#!/usr/bin/env python3
"""Chat with a member over datagrams: each line typed goes to MEMBER, each datagram that
arrives (from anyone) is printed."""

from __future__ import annotations

import argparse
import asyncio
import sys

import burrow


async def chat(member: str, socket: str | None) -> None:
    async with burrow.Mesh(socket=socket) as mesh:
        await mesh.open_datagrams()

        async def receive() -> None:
            while True:
                sender, data = await mesh.recv()
                print(f"<{sender}> {data.decode(errors='replace')}", flush=True)

        receiving = asyncio.create_task(receive())
        loop = asyncio.get_running_loop()
        try:
            while line := await loop.run_in_executor(None, sys.stdin.readline):
                await mesh.send(member, line.rstrip("\n").encode())
        finally:
            receiving.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("member", help="the member to write to (name or node id)")
    parser.add_argument("--socket", help="the daemon's socket [default: from XDG_RUNTIME_DIR]")
    args = parser.parse_args()
    try:
        asyncio.run(chat(args.member, args.socket))
    except burrow.BurrowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
