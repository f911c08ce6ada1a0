"""One agent of the lab's ZeroMQ test: a PUB socket bound on this machine's loopback (a port
the mesh exposes) and a SUB socket connected to the other agent's PUB through a burrow forward.

It runs in phases, and says on stdout where it is:

1. ``synced``: both agents hear each other (each publishes ``hello`` until it has heard the
   other and the other has heard it).
2. After ``start`` appears in the control file: it publishes ``--count`` numbered messages
   (sizes up to 1 MiB) while it checks those it receives are every one, in order and intact;
   ``progress N`` every 100 received, then one JSON line with what it saw.
3. After ``again`` appears in the control file: as phase 1 with ``again`` messages, then
   ``reconnected``. The sockets are the same ones throughout: ZeroMQ reconnects by itself.

No high-water marks (``SNDHWM``/``RCVHWM`` 0), so nothing is dropped while a path changes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from pathlib import Path

import zmq

MIB = 1024 * 1024


def size_of(seq: int) -> int:
    """The size of message ``seq``: a full MiB every 100th, otherwise up to 16 KiB."""
    return MIB if seq % 100 == 99 else (seq * 7919) % (16 * 1024) + 1


def payload(seq: int, size: int) -> bytes:
    """The bytes of message ``seq``: a digest of its number, repeated to ``size``."""
    block = hashlib.sha256(seq.to_bytes(8, "big")).digest()
    return (block * (size // len(block) + 1))[:size]


def say(line: str) -> None:
    """One line on stdout, at once."""
    print(line, flush=True)


def wait_for(control: Path, word: str) -> None:
    """Waits until the control file holds ``word`` on a line of its own."""
    while True:
        if control.exists() and word in control.read_text().split():
            return
        time.sleep(0.05)


def handshake(pub: zmq.Socket, sub: zmq.Socket, kind: bytes) -> list[list[bytes]]:
    """Publishes ``kind`` until both agents heard each other; returns messages of other kinds
    that came meanwhile (the other agent may be a phase ahead)."""
    heard = peer_heard = False
    early: list[list[bytes]] = []
    while not (heard and peer_heard):
        pub.send_multipart([kind, b"1" if heard else b"0"])
        deadline = time.monotonic() + 0.1
        while (left := deadline - time.monotonic()) > 0:
            if not sub.poll(int(left * 1000) + 1):
                break
            msg = sub.recv_multipart()
            if msg[0] == kind:
                heard = True
                peer_heard |= msg[1] == b"1"
            elif msg[0] == b"msg":
                # The other agent heard us, and is sending already.
                heard = peer_heard = True
                early.append(msg)
    # Once more, so the other agent hears that we heard it.
    pub.send_multipart([kind, b"1"])
    return early


def exchange(pub: zmq.Socket, sub: zmq.Socket, count: int, early: list[list[bytes]]) -> dict:
    """Sends ``count`` messages from a thread while it checks what it receives."""

    def send() -> None:
        for seq in range(count):
            pub.send_multipart([b"msg", seq.to_bytes(8, "big"), payload(seq, size_of(seq))])

    sender = threading.Thread(target=send)
    start = time.monotonic()
    sender.start()
    expected, in_order, intact, received_bytes = 0, True, True, 0
    pending = list(early)
    while expected < count:
        msg = pending.pop(0) if pending else sub.recv_multipart()
        if msg[0] != b"msg":
            continue
        seq = int.from_bytes(msg[1], "big")
        in_order &= seq == expected
        intact &= msg[2] == payload(seq, size_of(seq))
        received_bytes += len(msg[2])
        expected = seq + 1
        if expected % 100 == 0:
            say(f"progress {expected}")
    sender.join()
    return {
        "received": expected,
        "in_order": in_order,
        "intact": intact,
        "bytes": received_bytes,
        "seconds": round(time.monotonic() - start, 3),
    }


def main() -> int:
    """Runs the agent's phases."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pub-port", type=int, required=True, help="port to bind PUB on 127.0.0.1")
    p.add_argument("--sub", required=True, help="endpoint to connect SUB to (tcp://IP:PORT)")
    p.add_argument("--control", type=Path, required=True, help="file the test writes to")
    p.add_argument("--count", type=int, default=1000)
    args = p.parse_args()

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind(f"tcp://127.0.0.1:{args.pub_port}")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(args.sub)

    early = handshake(pub, sub, b"hello")
    say("synced")
    wait_for(args.control, "start")
    say(json.dumps(exchange(pub, sub, args.count, early)))
    wait_for(args.control, "again")
    handshake(pub, sub, b"again")
    say("reconnected")
    pub.close(linger=0)
    sub.close(linger=0)
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
