#!/usr/bin/env python3
"""Send a file to a member over a stream, and check it arrived whole.

  stream_file.py receive [--out FILE]   # on the member: wait for one stream
  stream_file.py send MEMBER FILE       # here: send FILE to MEMBER

Both print the file's SHA-256; the receiver sends its digest back, and the sender says
whether it matches."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys

import burrow


async def send(mesh: burrow.Mesh, member: str, path: str) -> int:
    digest = hashlib.sha256()
    async with await mesh.open_stream(member) as stream:
        with open(path, "rb") as f:
            while chunk := f.read(256 * 1024):
                digest.update(chunk)
                stream.write(chunk)
                await stream.drain()
        await stream.close_write()
        theirs = (await stream.read()).decode()
    print(f"{digest.hexdigest()}  {path}")
    if theirs != digest.hexdigest():
        print(f"error: {member} got {theirs or 'nothing'}", file=sys.stderr)
        return 1
    print(f"{member} got it whole")
    return 0


async def receive(mesh: burrow.Mesh, out: str | None) -> int:
    sender, stream = await mesh.accept_stream()
    digest = hashlib.sha256()
    size = 0
    with open(out, "wb") if out else open("/dev/null", "wb") as f:
        async for chunk in stream:
            digest.update(chunk)
            f.write(chunk)
            size += len(chunk)
    stream.write(digest.hexdigest().encode())
    await stream.close_write()
    await stream.close()
    print(f"{digest.hexdigest()}  {size} bytes from {sender}")
    return 0


async def run(args: argparse.Namespace) -> int:
    async with burrow.Mesh(socket=args.socket) as mesh:
        if args.command == "send":
            return await send(mesh, args.member, args.file)
        return await receive(mesh, args.out)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--socket", help="the daemon's socket [default: from XDG_RUNTIME_DIR]")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("send", help="send a file to a member")
    s.add_argument("member")
    s.add_argument("file")
    r = sub.add_parser("receive", help="receive one file")
    r.add_argument("--out", help="where to write it [default: nowhere, only the digest]")
    args = parser.parse_args()
    try:
        return asyncio.run(run(args))
    except burrow.BurrowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
