"""Fixtures: a real relay and real ``burrow up`` daemons on loopback, each node with XDG
directories of its own (its own key) in a temp dir; and a tiny asyncio Unix-socket server
for the HTTP and WebSocket edge cases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import burrow

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
BURROW_BIN = os.environ.get("BURROW_BIN") or str(ROOT / "target/debug/burrow")
#: Variables a node's environment never inherits: each node has its own.
_OWN_VARS = ("XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "HOME", "BURROW_CONFIG")


def run(coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
    """Runs a test's coroutine to its end (at most ``timeout`` seconds)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Waits until ``check()`` is true; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout} s: {check.__name__}")
        await asyncio.sleep(0.1)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gone(pid: int) -> bool:
    """Whether no process runs with this PID (a zombie, dead but not reaped, runs no more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(") ", 1)[1].startswith(("Z", "X"))


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Stops a process we started, by its PID: SIGTERM, then SIGKILL after ``grace``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def burrow_bin() -> str:
    """The burrow binary under test ($BURROW_BIN, else target/debug/burrow)."""
    if not os.access(BURROW_BIN, os.X_OK):
        pytest.fail(f"no burrow binary at {BURROW_BIN}: build it or set BURROW_BIN")
    return BURROW_BIN


@pytest.fixture(scope="session")
def relay(burrow_bin: str) -> Iterator[str]:
    """A relay on 127.0.0.1 for the whole session: its URL."""
    port = free_port()
    base = Path(tempfile.mkdtemp(prefix="bwrelay"))
    log = open(base / "relay.log", "wb")
    env = {k: v for k, v in os.environ.items() if k not in _OWN_VARS} | {"HOME": str(base)}
    proc = subprocess.Popen(
        [burrow_bin, "relay", "--listen", f"127.0.0.1:{port}"],
        env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the relay did not come up: {(base / 'relay.log').read_text()}")
                time.sleep(0.05)
        yield url
    finally:
        stop(proc)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


class Node:
    """A burrow node of its own: XDG directories in ``base/name``, CLI calls and a daemon."""

    def __init__(self, base: Path, name: str, burrow_bin: str, relay: str) -> None:
        self.name = name
        self.bin = burrow_bin
        self.relay = relay
        self.dir = base / name
        run_dir = self.dir / "run"
        for d in (run_dir, self.dir / "state", self.dir / "config"):
            d.mkdir(parents=True, mode=0o700)
        self.env: dict[str, str] = {
            k: v for k, v in os.environ.items() if k not in _OWN_VARS
        } | {
            "HOME": str(self.dir),
            "XDG_RUNTIME_DIR": str(run_dir),
            "XDG_STATE_HOME": str(self.dir / "state"),
            "XDG_CONFIG_HOME": str(self.dir / "config"),
            "BURROW_NO_MDNS": "1",
        }
        self.socket = run_dir / "burrow/api.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        #: The daemon's JSON lines on stdout (``{"event": "up", ...}`` and the like).
        self.stdout = self.dir / "up.out"

    #: ``up``'s arguments that keep it on loopback.
    UP_ARGS = ("--no-mdns", "--bind", "127.0.0.1:0")

    def cli(self, *args: str) -> str:
        """Runs ``burrow ARGS`` as this node; its stdout (fails the test if it fails)."""
        p = subprocess.run(
            [self.bin, *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if p.returncode != 0:
            pytest.fail(f"burrow {' '.join(args)} failed ({p.returncode}): {p.stderr}")
        return p.stdout

    def init(self, mesh: str = "lab") -> None:
        """``burrow init``: a new mesh, with this node its admin."""
        self.cli("init", mesh, "--name", self.name, "--relay", self.relay, "--no-mdns",
                 "--bind", "127.0.0.1:0")

    def join(self, token: str) -> None:
        """``burrow join TOKEN`` as this node's name."""
        self.cli("join", token, "--name", self.name, "--no-mdns", "--bind", "127.0.0.1:0")

    def up(self, *extra: str) -> None:
        """Starts ``burrow up`` and waits until its socket answers."""
        assert self.proc is None
        with open(self.stdout, "wb") as out, open(self.dir / "up.err", "wb") as err:
            self.proc = subprocess.Popen(
                [self.bin, "up", *self.UP_ARGS, "--json", *extra],
                env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            )
        deadline = time.monotonic() + 15
        while True:
            try:
                run(self.mesh().status(), timeout=5)
                return
            except burrow.DaemonNotRunning:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{self.name}'s burrow up did not answer: {self.log()}")
                time.sleep(0.05)

    def up_event(self, event: str) -> dict[str, Any]:
        """The daemon's stdout line of ``event`` (``up``, ``waiting``, ``joined``)."""
        for line in self.stdout.read_text().splitlines():
            data: dict[str, Any] = json.loads(line)
            if data.get("event") == event:
                return data
        pytest.fail(f"no {event!r} line from {self.name}'s burrow up: {self.log()}")

    def log(self) -> str:
        """The daemon's stderr, for failure messages."""
        path = self.dir / "up.err"
        return path.read_text() if path.exists() else ""

    def mesh(self, **kwargs: Any) -> burrow.Mesh:
        """A client of this node's daemon."""
        return burrow.Mesh(socket=self.socket, **kwargs)

    def stop(self) -> None:
        """Stops the daemon: ``POST /v1/shutdown``, then SIGTERM and SIGKILL by its PID."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(burrow.BurrowError, OSError, TimeoutError):
                run(self.mesh().shutdown(), timeout=5)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                stop(self.proc)
        self.proc = None


class Nodes:
    """Makes nodes in one temp dir (short, for the socket paths), and stops them all."""

    def __init__(self, burrow_bin: str, relay: str) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="bw"))
        self.bin = burrow_bin
        self.relay = relay
        self.all: list[Node] = []

    def new(self, name: str) -> Node:
        """A node with no state yet."""
        node = Node(self.base, name, self.bin, self.relay)
        self.all.append(node)
        return node

    def admin(self, name: str = "alice") -> Node:
        """A node that created a mesh, its daemon up."""
        node = self.new(name)
        node.init()
        node.up()
        return node

    def member(self, admin: Node, name: str) -> Node:
        """A node joined to ``admin``'s mesh (``burrow invite``/``join``), its daemon up,
        and online at the admin."""
        token = json.loads(admin.cli("invite", "--json", "--no-code"))["token"]
        node = self.new(name)
        node.join(token)
        node.up()

        async def online() -> bool:
            members = await admin.mesh().members()
            return any(m.name == name and m.online for m in members)

        run(eventually(online))
        return node

    def close(self) -> None:
        """Stops every daemon and removes the temp dir."""
        for node in self.all:
            node.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def nodes(burrow_bin: str, relay: str) -> Iterator[Nodes]:
    """A maker of nodes, all stopped and removed after the test."""
    made = Nodes(burrow_bin, relay)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def pair(nodes: Nodes) -> tuple[Node, Node]:
    """An admin ``alice`` and a member ``bob`` of mesh ``lab``, both up and connected."""
    alice = nodes.admin()
    bob = nodes.member(alice, "bob")
    return alice, bob


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def unix_server(handler: Handler) -> AsyncIterator[str]:
    """A Unix-socket server in a temp dir running ``handler`` per connection: its path."""
    base = tempfile.mkdtemp(prefix="bwsrv")
    path = os.path.join(base, "api.sock")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_unix_server(serve, path)
    try:
        yield path
    finally:
        server.close()
        await server.wait_closed()
        shutil.rmtree(base, ignore_errors=True)


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """A request as the test server reads it: ``(request line, headers, body)``."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    line, *rest = head[:-4].split("\r\n")
    headers = {}
    for h in rest:
        k, _, v = h.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return line, headers, body
