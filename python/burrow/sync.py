"""The same client without asyncio: :class:`Mesh` runs a :class:`burrow.Mesh` on an event
loop of its own, in a thread, and waits for each call.

>>> from burrow.sync import Mesh
>>> with Mesh() as mesh:  # doctest: +SKIP
...     print([p.name for p in mesh.peers()])
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from . import mesh as _mesh
from . import stream as _stream
from .types import Exposed, Forward, Invite, Joined, Member, Peer, Pong, Status

T = TypeVar("T")


class _Loop:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class Stream:
    """A byte stream to a member (:class:`burrow.Stream`, waiting for each call)."""

    def __init__(self, loop: _Loop, stream: _stream.Stream) -> None:
        self._loop = loop
        self._stream = stream
        self.member = stream.member
        self.node_id = stream.node_id

    def write(self, data: bytes) -> None:
        """Sends ``data`` (and waits until it has gone out to the daemon)."""

        async def write() -> None:
            self._stream.write(data)
            await self._stream.drain()

        self._loop.run(write())

    def read(self, n: int = -1, timeout: float | None = None) -> bytes:
        """Up to ``n`` bytes (all until the end with ``n < 0``); ``b""`` at the end."""
        return self._loop.run(self._stream.read(n), timeout)

    def read_exact(self, n: int, timeout: float | None = None) -> bytes:
        """Exactly ``n`` bytes (:class:`asyncio.IncompleteReadError` if the stream ends)."""
        return self._loop.run(self._stream.read_exact(n), timeout)

    def close_write(self) -> None:
        """Ends this side; reading goes on."""
        self._loop.run(self._stream.close_write())

    def close(self) -> None:
        """Ends the stream both ways."""
        self._loop.run(self._stream.close())

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(64 * 1024):
            yield chunk


class Events:
    """The daemon's events as an iterator of dicts (:meth:`close` to unsubscribe)."""

    def __init__(self, loop: _Loop, events: _mesh.Events) -> None:
        self._loop = loop
        self._events = events
        loop.run(events.__aenter__())

    def next(self, timeout: float | None = None) -> dict[str, Any]:
        """The next event (:class:`StopIteration` once the daemon closed the stream;
        :class:`TimeoutError` after ``timeout`` seconds)."""
        try:
            return self._loop.run(self._events.__anext__(), timeout)
        except StopAsyncIteration:
            raise StopIteration from None

    def __next__(self) -> dict[str, Any]:
        return self.next()

    def __iter__(self) -> Events:
        return self

    def close(self) -> None:
        """Unsubscribes."""
        self._loop.run(self._events.aclose())

    def __enter__(self) -> Events:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Mesh:
    """:class:`burrow.Mesh` without asyncio: the same arguments, the same calls."""

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
        self._loop = _Loop()

        async def make() -> _mesh.Mesh:
            return _mesh.Mesh(
                socket, tcp=tcp, token=token, token_file=token_file, spawn=spawn,
                burrow=burrow, up_args=up_args, env=env, timeout=timeout,
                spawn_timeout=spawn_timeout,
            )

        try:
            self._mesh = self._loop.run(make())
        except BaseException:
            self._loop.stop()
            raise

    def __enter__(self) -> Mesh:
        try:
            self.connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> str:
        """Where the API is."""
        return self._mesh.address

    @property
    def pid(self) -> int | None:
        """The PID of the daemon this Mesh started, while it runs."""
        return self._mesh.pid

    def connect(self) -> None:
        """With ``spawn=True``: starts the daemon unless one answers."""
        self._loop.run(self._mesh.connect())

    def close(self) -> None:
        """Closes the WebSockets, stops a daemon this Mesh started, and ends the loop."""
        if self._loop.loop.is_closed():
            return
        try:
            self._loop.run(self._mesh.close())
        finally:
            self._loop.stop()

    def status(self) -> Status:
        """See :meth:`burrow.Mesh.status`."""
        return self._loop.run(self._mesh.status())

    def members(self) -> list[Member]:
        """See :meth:`burrow.Mesh.members`."""
        return self._loop.run(self._mesh.members())

    def peers(self) -> list[Peer]:
        """See :meth:`burrow.Mesh.peers`."""
        return self._loop.run(self._mesh.peers())

    def invite(
        self, expires: float | None = None, uses: int | None = None, code: bool = False
    ) -> Invite:
        """See :meth:`burrow.Mesh.invite`."""
        return self._loop.run(self._mesh.invite(expires, uses, code))

    def join(
        self, invite: str, name: str | None = None, relays: Sequence[str] | None = None
    ) -> Joined:
        """See :meth:`burrow.Mesh.join`."""
        return self._loop.run(self._mesh.join(invite, name, relays))

    def kick(self, member: str) -> str:
        """See :meth:`burrow.Mesh.kick`."""
        return self._loop.run(self._mesh.kick(member))

    def ping(self, member: str) -> Pong:
        """See :meth:`burrow.Mesh.ping`."""
        return self._loop.run(self._mesh.ping(member))

    def shutdown(self) -> None:
        """See :meth:`burrow.Mesh.shutdown`."""
        self._loop.run(self._mesh.shutdown())

    def events(self) -> Events:
        """The daemon's events, subscribed at once (see :meth:`burrow.Mesh.events`)."""
        return Events(self._loop, self._mesh.events())

    def expose(self, port: int, name: str | None = None) -> Exposed:
        """See :meth:`burrow.Mesh.expose`."""
        return self._loop.run(self._mesh.expose(port, name))

    def unexpose(self, port: int) -> None:
        """See :meth:`burrow.Mesh.unexpose`."""
        self._loop.run(self._mesh.unexpose(port))

    def exposed(self) -> list[Exposed]:
        """See :meth:`burrow.Mesh.exposed`."""
        return self._loop.run(self._mesh.exposed())

    def forward(
        self, member: str, port: int, local: str | tuple[str, int] | None = None
    ) -> tuple[str, int]:
        """See :meth:`burrow.Mesh.forward`."""
        return self._loop.run(self._mesh.forward(member, port, local))

    def unforward(self, local: str | tuple[str, int]) -> None:
        """See :meth:`burrow.Mesh.unforward`."""
        self._loop.run(self._mesh.unforward(local))

    def forwards(self) -> list[Forward]:
        """See :meth:`burrow.Mesh.forwards`."""
        return self._loop.run(self._mesh.forwards())

    def send(self, member: str, data: bytes) -> int:
        """See :meth:`burrow.Mesh.send`."""
        return self._loop.run(self._mesh.send(member, data))

    def open_datagrams(self) -> None:
        """See :meth:`burrow.Mesh.open_datagrams`."""
        self._loop.run(self._mesh.open_datagrams())

    def recv(self, timeout: float | None = None) -> tuple[str, bytes]:
        """The next datagram, ``(sender, data)``; :class:`TimeoutError` after ``timeout``."""
        return self._loop.run(self._mesh.recv(), timeout)

    def open_stream(self, member: str) -> Stream:
        """See :meth:`burrow.Mesh.open_stream`."""
        return Stream(self._loop, self._loop.run(self._mesh.open_stream(member)))

    def accept_stream(self, timeout: float | None = None) -> tuple[str, Stream]:
        """See :meth:`burrow.Mesh.accept_stream`."""
        name, stream = self._loop.run(self._mesh.accept_stream(), timeout)
        return name, Stream(self._loop, stream)
