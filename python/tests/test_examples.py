"""The examples run: ``--help`` for each, ``peers.py`` against a daemon, and (with the
forwarding routes) a file over a stream, a chat line and a ZeroMQ PUB/SUB across the mesh."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT, Node, free_port

EXAMPLES = ROOT / "python/examples"


def example(
    name: str, *args: str, env: dict[str, str] | None = None, stdin: int | None = None
) -> subprocess.Popen[str]:
    """Starts ``examples/NAME ARGS`` with pipes for its output (and ``stdin`` if asked)."""
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / name), *args], env=env, text=True, stdin=stdin,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_help(name: str) -> None:
    p = example(name, "--help")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "usage:" in out


def test_peers(pair: tuple[Node, Node]) -> None:
    alice, _ = pair
    out, err = example("peers.py", env=alice.env).communicate(timeout=30)
    assert "bob" in out and "yes" in out, err
    p = example("peers.py", "--socket", "/nonexistent/api.sock")
    _, err = p.communicate(timeout=30)
    assert p.returncode == 1 and "burrow up" in err


@pytest.mark.needs_forwarding
def test_stream_file(pair: tuple[Node, Node], tmp_path: Path) -> None:
    alice, bob = pair
    data = os.urandom(3 * 1024 * 1024 + 7)
    (tmp_path / "in").write_bytes(data)
    receiver = example("stream_file.py", "receive", "--out", str(tmp_path / "out"), env=bob.env)
    try:  # the stream waits (10 s) for the receiver to accept it
        sender = example("stream_file.py", "send", "bob", str(tmp_path / "in"), env=alice.env)
        out, err = sender.communicate(timeout=60)
        assert sender.returncode == 0, err
        assert hashlib.sha256(data).hexdigest() in out and "whole" in out
        assert receiver.wait(30) == 0
        assert (tmp_path / "out").read_bytes() == data
    finally:
        receiver.kill()
        receiver.communicate()


@pytest.mark.needs_forwarding
def test_chat(pair: tuple[Node, Node]) -> None:
    alice, bob = pair
    listener = example("chat.py", "alice", env=bob.env, stdin=subprocess.PIPE)
    talker = example("chat.py", "bob", env=alice.env, stdin=subprocess.PIPE)
    try:
        assert listener.stdout is not None and talker.stdin is not None
        with ThreadPoolExecutor(1) as pool:
            line = pool.submit(listener.stdout.readline)
            deadline = time.monotonic() + 15
            while not line.done():  # datagrams before the listener subscribed are lost
                assert time.monotonic() < deadline, "no datagram arrived"
                talker.stdin.write("hello bob\n")
                talker.stdin.flush()
                time.sleep(0.2)
            assert line.result() == "<alice> hello bob\n"
        talker.stdin.close()
        assert talker.wait(15) == 0
    finally:
        for p in (listener, talker):
            p.kill()
            p.wait()
            for pipe in (p.stdin, p.stdout, p.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.mark.needs_forwarding
def test_zmq_forward(pair: tuple[Node, Node]) -> None:
    alice, bob = pair
    port = str(free_port())
    publisher = example("zmq_forward.py", "pub", "--port", port, env=bob.env)
    subscriber = None
    try:
        assert publisher.stdout is not None
        assert "publishing" in publisher.stdout.readline()
        subscriber = example("zmq_forward.py", "sub", "bob", "--port", port, env=alice.env)
        assert subscriber.stdout is not None
        assert "is at" in subscriber.stdout.readline()
        assert subscriber.stdout.readline().startswith("tick ")
    finally:
        for p in (publisher, subscriber):
            if p is not None:
                p.kill()
                p.communicate()
