"""A minimal HTTP/1.1 client over asyncio streams, for the daemon's local API.

One request per connection (``Connection: close``); response bodies framed by
``Content-Length``, chunked transfer coding, or the end of the connection. Requests never
carry ``Origin``, ``Referer`` or ``Sec-Fetch-Site``: the daemon refuses those (a web page
must not drive it).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from .errors import BurrowError, DaemonNotRunning, ProtocolError, error_from_body

#: The longest response head (status line and headers) read.
MAX_HEAD = 64 * 1024
#: The longest response body read.
MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True)
class Target:
    """Where the API listens: a Unix socket, or ``host:port`` on loopback with a token."""

    socket: str | None = None
    host: str | None = None
    port: int | None = None
    token: str | None = None

    def __str__(self) -> str:
        return self.socket if self.socket is not None else f"{self.host}:{self.port}"

    @property
    def host_header(self) -> str:
        """The ``Host`` header: ``localhost`` on a socket, ``host:port`` on TCP."""
        return "localhost" if self.socket is not None else f"{self.host}:{self.port}"

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Opens a connection; a missing socket or a refusal is :class:`DaemonNotRunning`."""
        try:
            if self.socket is not None:
                return await asyncio.open_unix_connection(self.socket, limit=MAX_HEAD)
            return await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise DaemonNotRunning(
                f"no burrow daemon at {self}: run `burrow up` ({e.strerror})"
            ) from e

    def headers(self) -> dict[str, str]:
        """The headers every request carries."""
        h = {"Host": self.host_header}
        if self.token is not None:
            h["Authorization"] = f"Bearer {self.token}"
        return h


@dataclass(frozen=True)
class Response:
    """A response: status, headers (names in lower case) and body."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


def format_request(method: str, path: str, headers: dict[str, str], body: bytes | None) -> bytes:
    """A request's bytes."""
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    """Reads a status line and headers: ``(status, reason, headers)``."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        raise ProtocolError("the connection closed before the response's head") from e
    except asyncio.LimitOverrunError as e:
        raise ProtocolError(f"a response head over {MAX_HEAD} bytes") from e
    status_line, *lines = raw[:-4].decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.1 status line: {status_line!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"a malformed header line: {line!r}")
        key, value = name.lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


async def read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], limit: int = MAX_BODY
) -> bytes:
    """Reads a body as ``headers`` frame it (chunked, ``Content-Length`` or to the end)."""
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await _read_chunked(reader, limit)
        if "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise ProtocolError(f"a bad Content-Length: {length!r}")
            if int(length) > limit:
                raise ProtocolError(f"a response body of {length} bytes, over {limit}")
            return await reader.readexactly(int(length))
        body = bytearray()
        while chunk := await reader.read(65536):
            body += chunk
            if len(body) > limit:
                raise ProtocolError(f"a response body over {limit} bytes")
        return bytes(body)
    except asyncio.IncompleteReadError as e:
        raise ProtocolError("the connection closed inside the response's body") from e


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    body = bytearray()
    while True:
        line = (await reader.readuntil(b"\r\n"))[:-2]
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as e:
            raise ProtocolError(f"a bad chunk size: {line!r}") from e
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return bytes(body)
        if len(body) + size > limit:
            raise ProtocolError(f"a response body over {limit} bytes")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise ProtocolError("a chunk not followed by CRLF")


async def request(
    target: Target, method: str, path: str, body: Any = None, timeout: float = 30.0
) -> Any:
    """Sends one request and returns the answer's JSON; an error answer raises its
    :class:`BurrowError` subclass."""
    payload = None if body is None else json.dumps(body).encode()
    headers = target.headers() | {"Connection": "close", "Accept": "application/json"}
    if payload is not None:
        headers["Content-Type"] = "application/json"

    async def exchange() -> Response:
        reader, writer = await target.connect()
        try:
            writer.write(format_request(method, path, headers, payload))
            await writer.drain()
            status, reason, head = await read_head(reader)
            while 100 <= status < 200:  # an interim answer: the final one follows
                status, reason, head = await read_head(reader)
            data = b"" if status in (204, 304) else await read_body(reader, head)
            return Response(status, reason, head, data)
        finally:
            writer.close()

    res = await asyncio.wait_for(exchange(), timeout)
    if res.status >= 400:
        raise error_from_body(res.status, res.body)
    try:
        return res.json()
    except ValueError as e:
        raise BurrowError(f"the daemon's answer is not JSON: {res.body[:200]!r}") from e
