""":class:`Mesh`: the asyncio client of a running ``burrow up`` (or one it starts)."""

from __future__ import annotations

import asyncio
import atexit
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from . import _http
from ._ws import WebSocket
from .errors import BurrowError, ConnectionClosed, DaemonNotRunning, SpawnFailed, UnknownMember
from .stream import Stream
from .types import (
    Exposed,
    Forward,
    Invite,
    Joined,
    Member,
    Peer,
    Pong,
    Status,
    from_json,
    join_addr,
    split_addr,
)

#: How long a spawned daemon gets to stop after ``POST /v1/shutdown`` before SIGTERM, and
#: after SIGTERM before SIGKILL.
STOP_GRACE = 5.0
TERM_GRACE = 2.0


def _var(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name) or None  # an empty variable counts as unset, as in burrow


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """burrow's state directory: ``$XDG_STATE_HOME/burrow``, else
    ``~/.local/state/burrow``, else ``./.burrow/state`` (as the daemon's ``paths.rs``)."""
    env = os.environ if env is None else env
    if x := _var(env, "XDG_STATE_HOME"):
        return Path(x) / "burrow"
    if home := _var(env, "HOME"):
        return Path(home) / ".local/state/burrow"
    return Path(".burrow/state")


def default_socket(env: Mapping[str, str] | None = None) -> Path:
    """Where the daemon's socket is: ``api.sock`` in ``$XDG_RUNTIME_DIR/burrow``, else
    ``/run/burrow`` for root, else ``run`` in :func:`state_dir`."""
    env = os.environ if env is None else env
    if x := _var(env, "XDG_RUNTIME_DIR"):
        return Path(x) / "burrow/api.sock"
    if os.geteuid() == 0:
        return Path("/run/burrow/api.sock")
    return state_dir(env) / "run/api.sock"


#: Daemons started by ``spawn=True`` and not stopped yet: stopped at exit if still running.
_SPAWNED: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _stop_spawned_at_exit() -> None:
    for proc in list(_SPAWNED):
        proc.terminate()
    for proc in list(_SPAWNED):
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _SPAWNED.clear()


async def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


class Mesh:
    """A connection to this machine's burrow daemon, and through it to the mesh.

    ``Mesh()`` talks to the socket the daemon uses by default (from the XDG variables, as
    burrow does); ``Mesh(socket=PATH)`` to another; ``Mesh(tcp="127.0.0.1:PORT",
    token_file=PATH)`` (or ``token=``) to the daemon's TCP listener. Every call is one
    request; nothing is held open but the WebSockets of :meth:`recv`, :meth:`events` and
    streams.

    With ``spawn=True``, entering the Mesh (``async with``, or :meth:`connect`) starts
    ``burrow up --exit-with-parent`` if no daemon answers, waits until it does, and closing
    the Mesh (or the program's exit) stops it again. ``burrow`` is the binary (else
    ``$BURROW_BIN``, else ``burrow`` on ``PATH``), ``up_args`` more arguments for ``up``
    and ``env`` its environment (which also decides the default socket).
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        *,
        tcp: str | None = None,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        spawn: bool = False,
        burrow: str | os.PathLike[str] | None = None,
        up_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        spawn_timeout: float = 15.0,
    ) -> None:
        self._env: dict[str, str] = dict(os.environ if env is None else env)
        if tcp is not None:
            if spawn:
                raise ValueError("spawn=True serves the Unix socket: give socket=, not tcp=")
            host, port = split_addr(tcp)
            if token is None:
                file = Path(token_file) if token_file else state_dir(self._env) / "api-token"
                token = file.read_text().strip()
            self._target = _http.Target(host=host, port=port, token=token)
        else:
            self._target = _http.Target(
                socket=os.fspath(socket if socket is not None else default_socket(self._env))
            )
        self._spawn = spawn
        self._burrow = burrow
        self._up_args = list(up_args)
        self._timeout = timeout
        self._spawn_timeout = spawn_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._sockets: weakref.WeakSet[WebSocket] = weakref.WeakSet()
        self._datagrams: WebSocket | None = None
        self._datagram_lock = asyncio.Lock()
        #: Datagrams the daemon dropped because :meth:`recv` read too slowly.
        self.datagrams_missed = 0

    @property
    def address(self) -> str:
        """Where the API is: the socket's path, or ``host:port``."""
        return str(self._target)

    @property
    def pid(self) -> int | None:
        """The PID of the daemon this Mesh started (``spawn=True``), while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    async def __aenter__(self) -> Mesh:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """With ``spawn=True``: starts the daemon unless one answers. Else nothing."""
        if not self._spawn or self.pid is not None:
            return
        try:
            await self.status()
        except DaemonNotRunning:
            await self._start_daemon()

    async def close(self) -> None:
        """Closes this Mesh's WebSockets, and stops the daemon it started."""
        for ws in list(self._sockets):
            await ws.close()
        self._datagrams = None
        if self._proc is not None:
            await self._stop_daemon()

    # -- the daemon this Mesh starts ------------------------------------------------------

    def _binary(self) -> str:
        if self._burrow is not None:
            return os.fspath(self._burrow)
        found = self._env.get("BURROW_BIN") or shutil.which("burrow", path=self._env.get("PATH"))
        if not found:
            raise SpawnFailed(
                "no burrow binary to start: pass burrow=PATH, set BURROW_BIN or put burrow on PATH"
            )
        return found

    async def _start_daemon(self) -> None:
        argv = [self._binary(), "up", "--exit-with-parent", *self._up_args]
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                argv, env=self._env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=self._stderr,
            )
        except OSError as e:
            self._stderr.close()
            self._stderr = None
            raise SpawnFailed(f"cannot start {argv[0]}: {e}") from e
        _SPAWNED.add(self._proc)
        deadline = time.monotonic() + self._spawn_timeout
        while True:
            if (rc := self._proc.poll()) is not None:
                why = self._stderr_tail()
                await self._stop_daemon()
                raise SpawnFailed(f"`{' '.join(argv)}` exited with {rc} before answering: {why}")
            try:
                await self._call("GET", "/v1/status", timeout=2.0)
                return
            except (DaemonNotRunning, TimeoutError):
                if time.monotonic() > deadline:
                    await self._stop_daemon()
                    raise SpawnFailed(
                        f"`{' '.join(argv)}` did not answer at {self.address} within "
                        f"{self._spawn_timeout:g} s"
                    ) from None
                await asyncio.sleep(0.05)

    def _stderr_tail(self) -> str:
        assert self._stderr is not None
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace").strip()
        return text[-2000:] or "(nothing on stderr)"

    async def _stop_daemon(self) -> None:
        proc, self._proc = self._proc, None
        assert proc is not None
        if proc.poll() is None:
            try:
                await self._call("POST", "/v1/shutdown", {}, timeout=2.0)
            except (BurrowError, OSError, TimeoutError):
                pass
            if not await _wait_exit(proc, STOP_GRACE):
                proc.terminate()
                if not await _wait_exit(proc, TERM_GRACE):
                    proc.kill()
                    await _wait_exit(proc, TERM_GRACE)
        _SPAWNED.discard(proc)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    # -- requests ---------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, body: Any = None, timeout: float | None = None
    ) -> Any:
        return await _http.request(
            self._target, method, path, body, self._timeout if timeout is None else timeout
        )

    async def _websocket(self, path: str) -> WebSocket:
        ws = await WebSocket.connect(self._target, path, timeout=self._timeout)
        self._sockets.add(ws)
        return ws

    async def status(self) -> Status:
        """The daemon's node, mesh, NAT type, addresses and relays."""
        return Status.parse(await self._call("GET", "/v1/status"))

    async def members(self) -> list[Member]:
        """Every member of the mesh, this node included (``me``)."""
        answer = await self._call("GET", "/v1/members")
        return [from_json(Member, m) for m in answer["members"]]

    async def peers(self) -> list[Peer]:
        """Every other member: online or not, path, address, round trip, NAT, last seen."""
        answer = await self._call("GET", "/v1/members")
        return [from_json(Peer, m) for m in answer["members"] if not m.get("me")]

    async def invite(
        self, expires: float | None = None, uses: int | None = None, code: bool = False
    ) -> Invite:
        """An invite for more nodes (admins only): valid ``expires`` seconds (a day by
        default) for ``uses`` joins (1); with ``code``, also a short code."""
        body: dict[str, Any] = {"code": code}
        if expires is not None:
            body["expires_secs"] = max(1, round(expires))
        if uses is not None:
            body["uses"] = uses
        return from_json(Invite, await self._call("POST", "/v1/invites", body))

    async def join(
        self, invite: str, name: str | None = None, relays: Sequence[str] | None = None
    ) -> Joined:
        """Joins the mesh of ``invite`` (a token or short code; a code needs the ``relays``
        its inviter is listed at) as ``name``. Only on a daemon in no mesh yet, which then
        runs the mesh on the same socket."""
        body: dict[str, Any] = {"invite": invite}
        if name is not None:
            body["name"] = name
        if relays:
            body["relays"] = list(relays)
        return from_json(Joined, await self._call("POST", "/v1/join", body))

    async def kick(self, member: str) -> str:
        """Throws ``member`` (a name or node id) out of the mesh (admins only); returns its
        node id."""
        return str((await self._call("POST", "/v1/kick", {"member": member}))["node_id"])

    async def ping(self, member: str) -> Pong:
        """One round trip to ``member`` (a name or node id) over the daemon's connection."""
        answer = await self._call("GET", "/v1/members")
        found = [m for m in answer["members"] if member in (m["name"], m["node_id"])]
        if not found:
            raise UnknownMember(f"no member {member} in mesh {answer.get('mesh')}")
        return from_json(Pong, await self._call("POST", "/v1/ping", {"node": found[0]["node_id"]}))

    async def shutdown(self) -> None:
        """Asks the daemon to stop (it closes its connections, then its API)."""
        await self._call("POST", "/v1/shutdown", {})

    def events(self) -> Events:
        """The daemon's events, as dicts with an ``"event"`` key (``peer_up``,
        ``peer_down``, ``path_changed``, ``member_joined``, ``member_revoked``, ``lagged``).
        ``async with mesh.events() as ev:`` subscribes at once; ``async for`` on its own
        subscribes at the first event asked for."""
        return Events(self)

    # -- ports --------------------------------------------------------------------------------

    async def expose(self, port: int, name: str | None = None) -> Exposed:
        """Lets members open forwards to ``127.0.0.1:port`` on this node."""
        body: dict[str, Any] = {"port": port}
        if name is not None:
            body["name"] = name
        return from_json(Exposed, await self._call("POST", "/v1/expose", body))

    async def unexpose(self, port: int) -> None:
        """Stops exposing ``port``."""
        await self._call("DELETE", f"/v1/expose/{port}")

    async def exposed(self) -> list[Exposed]:
        """The ports this node exposes."""
        answer = await self._call("GET", "/v1/expose")
        return [from_json(Exposed, e) for e in answer["exposed"]]

    async def forward(
        self, member: str, port: int, local: str | tuple[str, int] | None = None
    ) -> tuple[str, int]:
        """A local TCP listener whose connections reach ``member``'s exposed ``port``;
        returns where it listens (``local``, else an address the daemon picks)."""
        body: dict[str, Any] = {"member": member, "port": port}
        if local is not None:
            body["local"] = join_addr(local)
        return from_json(Forward, await self._call("POST", "/v1/forwards", body)).address

    async def unforward(self, local: str | tuple[str, int]) -> None:
        """Closes the forward listening at ``local``."""
        await self._call("DELETE", f"/v1/forwards/{quote(join_addr(local), safe=':')}")

    async def forwards(self) -> list[Forward]:
        """This node's forwards."""
        answer = await self._call("GET", "/v1/forwards")
        return [from_json(Forward, f) for f in answer["forwards"]]

    # -- datagrams and streams -------------------------------------------------------------------

    async def send(self, member: str, data: bytes) -> int:
        """Sends ``data`` to ``member`` as one datagram (unreliable as UDP, at most the
        connection's datagram size: about 1,100 bytes over a relay, else
        :class:`PayloadTooLarge`); returns the bytes sent."""
        body = {"member": member, "data": base64.b64encode(data).decode()}
        return int((await self._call("POST", "/v1/datagrams", body))["sent"])

    async def open_datagrams(self) -> None:
        """Subscribes to datagrams now (:meth:`recv` does at its first call): the daemon
        keeps none that arrive while nobody is subscribed."""
        async with self._datagram_lock:
            if self._datagrams is None:
                self._datagrams = await self._websocket("/v1/datagrams")

    async def recv(self) -> tuple[str, bytes]:
        """The next datagram: ``(sender's name, data)`` (its node id if it has no name)."""
        await self.open_datagrams()
        assert self._datagrams is not None
        while True:
            try:
                message = json.loads(await self._datagrams.recv())
            except ConnectionClosed:
                self._datagrams = None
                raise
            if message.get("event") == "lagged":
                self.datagrams_missed += int(message.get("missed", 0))
                continue
            sender = message.get("from") or message["node_id"]
            return str(sender), base64.b64decode(message["data"])

    async def open_stream(self, member: str) -> Stream:
        """A byte stream to a program accepting streams (:meth:`accept_stream`) on
        ``member``'s machine (a name or node id): :class:`UnknownMember` if there is no such
        member, :class:`MemberOffline` if it is not connected, :class:`StreamRefused` if no
        program there accepts it within 10 s."""
        ws = await self._websocket(f"/v1/streams/{quote(member, safe='')}")
        return Stream(ws, member)

    async def accept_stream(self) -> tuple[str, Stream]:
        """Waits for the next stream a member opens to this node: ``(its name, stream)``."""
        ws = await self._websocket("/v1/streams")
        try:
            hello = json.loads(await ws.recv())
        except BaseException:
            await ws.close()
            raise
        name = str(hello.get("from") or hello["node_id"])
        return name, Stream(ws, name, hello["node_id"])


class Events:
    """The daemon's event stream (``GET /v1/events``): an async iterator of dicts that ends
    when the daemon closes it."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh
        self._ws: WebSocket | None = None

    async def __aenter__(self) -> Events:
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _open(self) -> WebSocket:
        if self._ws is None:
            self._ws = await self._mesh._websocket("/v1/events")
        return self._ws

    def __aiter__(self) -> Events:
        return self

    async def __anext__(self) -> dict[str, Any]:
        ws = await self._open()
        try:
            event: dict[str, Any] = json.loads(await ws.recv())
        except ConnectionClosed:
            raise StopAsyncIteration from None
        return event

    async def aclose(self) -> None:
        """Unsubscribes."""
        if self._ws is not None:
            await self._ws.close()
