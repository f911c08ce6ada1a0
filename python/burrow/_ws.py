"""A minimal RFC 6455 WebSocket client over the streams of :mod:`burrow._http`.

The handshake checks ``Sec-WebSocket-Accept``; frames sent are masked; received ones may be
fragmented (control frames between the fragments are answered); a message over
``max_size`` closes the connection with 1009. An answer other than ``101`` before the
upgrade raises the API's error for it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct

from ._http import Target, format_request, read_body, read_head
from .errors import BurrowError, ConnectionClosed, ProtocolError, error_from_body

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: The largest message read, by default.
MAX_MESSAGE = 4 * 1024 * 1024
#: Messages read ahead of :meth:`WebSocket.recv` (then the socket is left unread).
QUEUE = 16


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` that answers ``key``."""
    return base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()


def mask(data: bytes, key: bytes) -> bytes:
    """``data`` XOR the repeated 4-byte ``key`` (masking and unmasking are the same)."""
    n = len(data)
    if n == 0:
        return b""
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        n, "little"
    )


def encode_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame: masked with a fresh key."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 1 << 16:
        head.append(0x80 | 126)
        head += struct.pack("!H", n)
    else:
        head.append(0x80 | 127)
        head += struct.pack("!Q", n)
    key = os.urandom(4)
    return bytes(head) + key + mask(payload, key)


class WebSocket:
    """One client connection. :meth:`recv` returns whole messages (``str`` or ``bytes``)
    and raises :class:`ConnectionClosed` once the server has closed (a Close from it is
    answered at once); a broken protocol raises :class:`ProtocolError`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_size: int = MAX_MESSAGE,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.max_size = max_size
        #: Whether a Close was sent, and received (with its code and reason).
        self.close_sent = False
        self.close_received = False
        self.close_code: int | None = None
        self.close_reason = ""
        self._messages: asyncio.Queue[str | bytes | BurrowError] = asyncio.Queue(QUEUE)
        self._failure: BurrowError | None = None
        self._reader_task = asyncio.create_task(self._read_messages())

    @classmethod
    async def connect(
        cls,
        target: Target,
        path: str,
        max_size: int = MAX_MESSAGE,
        timeout: float = 30.0,
    ) -> WebSocket:
        """Opens ``path`` on ``target`` and upgrades it."""
        reader, writer = await target.connect()
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            headers = target.headers() | {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": key,
                "Sec-WebSocket-Version": "13",
            }
            writer.write(format_request("GET", path, headers, None))
            await writer.drain()
            status, _, head = await asyncio.wait_for(read_head(reader), timeout)
            if status != 101:
                body = await asyncio.wait_for(read_body(reader, head), timeout)
                raise error_from_body(status, body)
            if head.get("upgrade", "").lower() != "websocket" or "upgrade" not in [
                t.strip() for t in head.get("connection", "").lower().split(",")
            ]:
                raise ProtocolError("the 101 answer does not upgrade to websocket")
            if head.get("sec-websocket-accept") != accept_key(key):
                raise ProtocolError("the server's Sec-WebSocket-Accept does not match the key")
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer, max_size)

    def send(self, opcode: int, payload: bytes) -> None:
        """Queues one unfragmented frame (call :meth:`drain` to wait until it is out)."""
        if self.close_sent:
            raise ConnectionClosed("this side of the WebSocket is closed", self.close_code)
        self._writer.write(encode_frame(opcode, payload))

    def send_text(self, text: str) -> None:
        """Queues a text message."""
        self.send(TEXT, text.encode())

    def send_binary(self, data: bytes) -> None:
        """Queues a binary message."""
        self.send(BINARY, data)

    async def drain(self) -> None:
        """Waits until the queued frames have gone out (or the transport's buffer is low).
        Once both Close frames have passed, the transport flushes what is left as it closes."""
        if self._writer.is_closing() and self.close_sent and self.close_received:
            return
        try:
            await self._writer.drain()
        except (ConnectionError, BrokenPipeError) as e:
            raise ConnectionClosed(f"the connection broke: {e}", self.close_code) from e

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Sends a Close frame, once (the server may still send until its own)."""
        if not self.close_sent and not self._writer.is_closing():
            self._writer.write(encode_frame(CLOSE, struct.pack("!H", code) + reason.encode()))
        self.close_sent = True
        if self.close_received:
            self._writer.close()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Sends a Close frame (if not yet) and drops the connection."""
        self.send_close(code, reason)
        self._reader_task.cancel()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, BrokenPipeError):
            pass

    def _closed(self) -> ConnectionClosed:
        return ConnectionClosed(
            f"the WebSocket closed ({self.close_code}{': ' if self.close_reason else ''}"
            f"{self.close_reason})",
            self.close_code,
            self.close_reason,
        )

    async def _read_frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = await self._reader.readexactly(2)
        fin, opcode, n = bool(b0 & 0x80), b0 & 0x0F, b1 & 0x7F
        if b0 & 0x70:
            raise self._fail(1002, "a frame with reserved bits set")
        if b1 & 0x80:
            raise self._fail(1002, "a masked frame from the server")
        if n == 126:
            (n,) = struct.unpack("!H", await self._reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self._reader.readexactly(8))
        if opcode >= CLOSE and (n > 125 or not fin):
            raise self._fail(1002, "a fragmented or long control frame")
        if opcode < CLOSE and n > self.max_size:
            raise self._fail(1009, f"a message over {self.max_size} bytes")
        return fin, opcode, await self._reader.readexactly(n)

    def _fail(self, code: int, why: str) -> ProtocolError:
        self.send_close(code, why[:120])
        self._writer.close()
        return ProtocolError(f"WebSocket: {why}")

    async def recv(self) -> str | bytes:
        """The next message: ``str`` for text, ``bytes`` for binary. Cancelling it loses
        nothing: a task of the WebSocket's own reads the frames (and answers pings)."""
        if self._failure is not None and self._messages.empty():
            raise self._failure
        item = await self._messages.get()
        if isinstance(item, BurrowError):
            self._failure = item
            raise item
        return item

    async def _read_messages(self) -> None:
        try:
            while True:
                await self._messages.put(await self._read_message())
        except BurrowError as e:
            await self._messages.put(e)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            self.close_received = True
            self._writer.close()
            closed = ConnectionClosed("the connection closed without a Close frame", 1006)
            closed.__cause__ = e
            await self._messages.put(closed)

    async def _read_message(self) -> str | bytes:
        parts: list[bytes] = []
        size = 0
        kind = None
        while True:
            fin, opcode, payload = await self._read_frame()
            if opcode == PING:
                if not self.close_sent:
                    self._writer.write(encode_frame(PONG, payload))
            elif opcode == PONG:
                pass
            elif opcode == CLOSE:
                self._on_close(payload)
                raise self._closed()
            elif opcode in (TEXT, BINARY, CONTINUATION):
                if (opcode == CONTINUATION) != (kind is not None):
                    raise self._fail(1002, "a fragment out of order")
                kind = kind if kind is not None else opcode
                size += len(payload)
                if size > self.max_size:
                    raise self._fail(1009, f"a message over {self.max_size} bytes")
                parts.append(payload)
                if fin:
                    data = b"".join(parts)
                    if kind == BINARY:
                        return data
                    try:
                        return data.decode()
                    except UnicodeDecodeError as e:
                        raise self._fail(1007, "a text message not UTF-8") from e
            else:
                raise self._fail(1002, f"an unknown opcode {opcode:#x}")

    def _on_close(self, payload: bytes) -> None:
        self.close_received = True
        if len(payload) >= 2:
            (self.close_code,) = struct.unpack("!H", payload[:2])
            self.close_reason = payload[2:].decode("utf-8", "replace")
        else:
            self.close_code = 1005
        self.send_close(self.close_code if self.close_code != 1005 else 1000)
