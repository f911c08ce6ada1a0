"""A bidirectional byte stream to a member, carried by a WebSocket to the daemon
(``GET /v1/streams/{member}``, or ``GET /v1/streams`` for one a member opened).

Binary messages carry the bytes both ways; an empty one ends its sender's side (TCP's FIN).
Once both sides have ended the daemon closes the WebSocket with 1000; a failure closes it
with 1011 and the reason; a program that closes the WebSocket first resets the stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ._ws import WebSocket
from .errors import BurrowError, ConnectionClosed, ProtocolError, StreamFailed

#: Writes are cut into binary messages of at most this many bytes (the daemon takes 1 MiB).
CHUNK = 64 * 1024


class Stream:
    """Bytes both ways with a member, like a TCP connection.

    :meth:`close_write` ends this side (the member reads the end) while reading goes on;
    reading returns ``b""`` once the member has ended its side. A failure of the stream
    raises :class:`StreamFailed`."""

    def __init__(self, ws: WebSocket, member: str, node_id: str | None = None) -> None:
        self._ws = ws
        #: The member at the other end, as it was named (and its node id, when known).
        self.member = member
        self.node_id = node_id
        self._buffer = bytearray()
        self._eof = False
        self._write_closed = False

    def write(self, data: bytes) -> None:
        """Queues ``data`` (await :meth:`drain` to wait until it has gone out)."""
        if self._write_closed:
            raise ConnectionClosed(f"the stream to {self.member} is closed for writing")
        view = memoryview(data)
        for i in range(0, len(view), CHUNK):
            self._ws.send_binary(bytes(view[i : i + CHUNK]))

    async def drain(self) -> None:
        """Waits until the queued bytes have gone out to the daemon."""
        await self._ws.drain()

    async def _fill(self) -> bool:
        """Reads one more message into the buffer; ``False`` at the end of the stream."""
        if self._eof:
            return False
        try:
            message = await self._ws.recv()
        except ConnectionClosed as e:
            if e.close_code == 1000:
                self._eof = True
                return False
            raise StreamFailed(
                f"the stream to {self.member} failed: {e.reason or e.message}",
                e.close_code,
                e.reason,
            ) from e
        if isinstance(message, str):
            raise ProtocolError(f"a text message inside a stream: {message[:100]!r}")
        if not message:  # the member ended its side
            self._eof = True
            return False
        self._buffer += message
        return True

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all of them until the end, with ``n < 0``); ``b""`` at the end."""
        if n < 0:
            while await self._fill():
                pass
        elif not self._buffer:
            while not self._buffer and await self._fill():
                pass
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def read_exact(self, n: int) -> bytes:
        """Exactly ``n`` bytes; :class:`asyncio.IncompleteReadError` if the stream ends first."""
        while len(self._buffer) < n:
            if not await self._fill():
                partial = bytes(self._buffer)
                self._buffer.clear()
                raise asyncio.IncompleteReadError(partial, n)
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def close_write(self) -> None:
        """Ends this side (like TCP's FIN): the member reads the end; reading goes on."""
        if not self._write_closed:
            self._write_closed = True
            self._ws.send_binary(b"")
            await self._ws.drain()

    async def close(self) -> None:
        """Drops the stream: one both sides have ended is done (its Close from the daemon is
        waited for, 2 s at most); one not yet is reset."""
        if self._eof and self._write_closed:
            with contextlib.suppress(BurrowError, TimeoutError):
                await asyncio.wait_for(self._closed(), 2.0)
        await self._ws.close(1000)

    async def _closed(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self._ws.recv()

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.read(CHUNK):
            yield chunk
