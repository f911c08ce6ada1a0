"""The WebSocket client, and the Stream over it, against a tiny asyncio server: the
handshake, masking, fragments with control frames between them, sizes, closing, and a
stream's half-close."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
from collections.abc import Awaitable, Callable

import pytest
from conftest import read_request, run, unix_server

import burrow
from burrow import _ws
from burrow._http import Target

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def frame(
    opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, masked: bool = False
) -> bytes:
    """A frame as a server sends it (unmasked, unless asked)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    return head + (b"\0\0\0\0" + payload if masked else payload)


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(_ws.CLOSE, struct.pack("!H", code) + reason.encode())


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """A client's frame: ``(opcode, unmasked payload)``; it must be masked."""
    b0, b1 = await reader.readexactly(2)
    assert b1 & 0x80, "a client frame must be masked"
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    key = await reader.readexactly(4)
    return b0 & 0x0F, _ws.mask(await reader.readexactly(n), key)


def ws_server(
    script: Script, accept: str | None = None
) -> contextlib.AbstractAsyncContextManager[str]:
    """A server that upgrades (with the right accept key, unless ``accept``), then runs
    ``script``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, headers, _ = await read_request(reader)
        assert headers["sec-websocket-version"] == "13"
        key = accept or _ws.accept_key(headers["sec-websocket-key"])
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + key.encode() + b"\r\n\r\n"
        )
        await script(reader, writer)

    return unix_server(handler)


async def connect(path: str, **kwargs: object) -> _ws.WebSocket:
    return await _ws.WebSocket.connect(Target(socket=path), "/v1/events", **kwargs)  # type: ignore[arg-type]


def test_messages_both_ways_masked_and_every_length() -> None:
    got: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(_ws.TEXT, "héllo".encode()) + frame(_ws.BINARY, b"\x00" * 200))
        writer.write(frame(_ws.BINARY, bytes(range(256)) * 300))  # a 64-bit length
        for _ in range(3):
            got.append(await read_frame(reader))
        writer.write(close_frame(1000))
        got.append(await read_frame(reader))

    async def body() -> None:
        async with ws_server(script) as path:
            ws = await connect(path)
            assert await ws.recv() == "héllo"
            assert await ws.recv() == b"\x00" * 200
            assert await ws.recv() == bytes(range(256)) * 300
            ws.send_text("hi")
            ws.send_binary(b"x" * 300)
            ws.send_binary(b"y" * 70000)
            await ws.drain()
            with pytest.raises(burrow.ConnectionClosed) as e:
                await ws.recv()
            assert e.value.close_code == 1000
            await ws.close()

    run(body())
    assert got[:3] == [(_ws.TEXT, b"hi"), (_ws.BINARY, b"x" * 300), (_ws.BINARY, b"y" * 70000)]
    assert got[3] == (_ws.CLOSE, struct.pack("!H", 1000))  # the close is answered


def test_fragments_with_a_ping_between_them() -> None:
    pongs: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(_ws.TEXT, b"hel", fin=False))
        writer.write(frame(_ws.PING, b"are you there"))
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(frame(_ws.CONTINUATION, b"lo ", fin=False) + frame(_ws.PONG, b""))
        writer.write(frame(_ws.CONTINUATION, b"world"))
        writer.write(frame(_ws.BINARY, b"a", fin=False) + frame(_ws.CONTINUATION, b"b"))
        pongs.append(await read_frame(reader))
        await reader.read()

    async def body() -> None:
        async with ws_server(script) as path:
            ws = await connect(path)
            assert await ws.recv() == "hello world"
            assert await ws.recv() == b"ab"
            await asyncio.sleep(0.05)
            await ws.close()

    run(body())
    assert pongs == [(_ws.PONG, b"are you there")]


@pytest.mark.parametrize(
    ("frames", "close_code", "match"),
    [
        ([frame(_ws.BINARY, b"z" * 1001)], 1009, "over 1000"),
        ([frame(_ws.TEXT, b"z" * 600, fin=False), frame(_ws.CONTINUATION, b"z" * 600)], 1009,
         "over 1000"),
        ([frame(_ws.CONTINUATION, b"z")], 1002, "out of order"),
        ([frame(_ws.TEXT, b"a", fin=False), frame(_ws.TEXT, b"b")], 1002, "out of order"),
        ([frame(_ws.PING, b"p", fin=False)], 1002, "control frame"),
        ([frame(_ws.TEXT, b"x", masked=True)], 1002, "masked"),
        ([frame(_ws.TEXT, b"x", rsv=0x40)], 1002, "reserved"),
        ([frame(0x3, b"x")], 1002, "opcode"),
        ([frame(_ws.TEXT, b"\xff\xfe")], 1007, "UTF-8"),
    ],
)
def test_broken_or_oversize_messages_close_with_a_code(
    frames: list[bytes], close_code: int, match: str
) -> None:
    closes: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"".join(frames))
        closes.append(await read_frame(reader))

    async def body() -> None:
        async with ws_server(script) as path:
            ws = await connect(path, max_size=1000)
            with pytest.raises(burrow.ProtocolError, match=match):
                await ws.recv()
            with pytest.raises(burrow.ProtocolError):
                await ws.recv()  # and again: the WebSocket is done
            await ws.close()

    run(body())
    assert closes[0][0] == _ws.CLOSE
    assert struct.unpack("!H", closes[0][1][:2])[0] == close_code


def test_the_handshake_is_checked() -> None:
    async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def body() -> None:
        async with ws_server(nothing, accept="d3Jvbmc=") as path:
            with pytest.raises(burrow.ProtocolError, match="Accept"):
                await connect(path)

        async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            body = json.dumps({"error": {"code": "member_offline", "message": "bob is away"}})
            writer.write(
                f"HTTP/1.1 409 Conflict\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
            )

        async with unix_server(refuse) as path:
            with pytest.raises(burrow.MemberOffline, match="bob is away"):
                await burrow.Mesh(socket=path).open_stream("bob")

    run(body())


def test_a_dropped_connection_is_1006() -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(_ws.TEXT, b"bye") + frame(_ws.TEXT, b"cut short")[:-3])
        writer.transport.abort()

    async def body() -> None:
        async with ws_server(drop) as path:
            ws = await connect(path)
            assert await ws.recv() == "bye"
            with pytest.raises(burrow.ConnectionClosed) as e:
                await ws.recv()
            assert e.value.close_code == 1006

    run(body())


def test_cancelling_recv_loses_no_message() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = frame(_ws.BINARY, b"q" * 5000)
        writer.write(data[:100])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(data[100:])
        await reader.read()

    async def body() -> None:
        async with ws_server(slow) as path:
            ws = await connect(path)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.05)
            assert await ws.recv() == b"q" * 5000
            await ws.close()

    run(body())


def test_a_stream_half_closes_and_reads_to_the_end() -> None:
    got: list[tuple[int, bytes]] = []

    async def member(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(_ws.BINARY, b"hello "))
        while True:  # read until the client's end: an empty binary message
            opcode, payload = await read_frame(reader)
            got.append((opcode, payload))
            if opcode == _ws.BINARY and not payload:
                break
        writer.write(frame(_ws.BINARY, b"world, after your end") + frame(_ws.BINARY, b""))
        writer.write(close_frame(1000))  # both sides ended
        got.append(await read_frame(reader))

    async def body() -> None:
        async with ws_server(member) as path:
            stream = await burrow.Mesh(socket=path).open_stream("bob")
            assert await stream.read_exact(6) == b"hello "
            stream.write(b"a" * 100_000)  # cut into messages of at most 64 KiB
            stream.write(b"")  # nothing: not the end
            await stream.drain()
            await stream.close_write()
            with pytest.raises(burrow.ConnectionClosed):
                stream.write(b"too late")
            assert await stream.read() == b"world, after your end"
            assert await stream.read(10) == b""
            await stream.close()

    run(body())
    data = [p for op, p in got if op == _ws.BINARY]
    assert data[-1] == b"" and b"".join(data) == b"a" * 100_000
    assert max(map(len, data)) <= 64 * 1024
    assert got[-1] == (_ws.CLOSE, struct.pack("!H", 1000))  # the daemon's close, answered


def test_the_member_ends_first_and_the_stream_can_still_write() -> None:
    got: list[tuple[int, bytes]] = []

    async def member(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(_ws.BINARY, b"all I had") + frame(_ws.BINARY, b""))
        while True:
            opcode, payload = await read_frame(reader)
            got.append((opcode, payload))
            if opcode == _ws.BINARY and not payload:
                break
        await asyncio.sleep(0.1)  # the close waits for the daemon's
        writer.write(close_frame(1000))
        got.append(await read_frame(reader))

    async def body() -> None:
        async with ws_server(member) as path:
            stream = await burrow.Mesh(socket=path).open_stream("bob")
            assert [chunk async for chunk in stream] == [b"all I had"]
            stream.write(b"thanks")
            await stream.close_write()
            await stream.close()

    run(body())
    assert got == [
        (_ws.BINARY, b"thanks"), (_ws.BINARY, b""), (_ws.CLOSE, struct.pack("!H", 1000)),
    ]


def test_closing_a_stream_before_the_end_closes_at_once() -> None:
    got: list[tuple[int, bytes]] = []

    async def member(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(_ws.BINARY, b"more to come"))
        got.append(await read_frame(reader))
        await reader.read()

    async def body() -> None:
        async with ws_server(member) as path:
            stream = await burrow.Mesh(socket=path).open_stream("bob")
            assert await stream.read(100) == b"more to come"
            await asyncio.wait_for(stream.close(), 1)  # a reset: nothing is waited for

    run(body())
    assert got == [(_ws.CLOSE, struct.pack("!H", 1000))]


def test_a_failed_stream_and_an_accepted_one() -> None:
    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(_ws.TEXT, json.dumps({"from": "bob", "node_id": "b0b"}).encode()))
        writer.write(frame(_ws.BINARY, b"par") + close_frame(1011, "the member went away"))
        await reader.read()

    async def body() -> None:
        async with ws_server(accepted) as path:
            name, stream = await burrow.Mesh(socket=path).accept_stream()
            assert (name, stream.member, stream.node_id) == ("bob", "bob", "b0b")
            with pytest.raises(burrow.StreamFailed, match="the member went away") as e:
                await stream.read_exact(10)
            assert e.value.close_code == 1011
            await stream.close()

    run(body())


def test_read_exact_at_the_end() -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(_ws.BINARY, b"abc") + close_frame(1000))
        await reader.read()

    async def body() -> None:
        async with ws_server(short) as path:
            stream = await burrow.Mesh(socket=path).open_stream("bob")
            with pytest.raises(asyncio.IncompleteReadError) as e:
                await stream.read_exact(5)
            assert e.value.partial == b"abc"
            await stream.close()

    run(body())


def test_datagrams_arrive_on_one_websocket_and_lag_is_counted() -> None:
    paths: list[str] = []

    async def daemon(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, headers, _ = await read_request(reader)
        paths.append(line)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: "
            + _ws.accept_key(headers["sec-websocket-key"]).encode() + b"\r\n\r\n"
        )
        for message in (
            {"event": "lagged", "missed": 2},
            {"from": "bob", "node_id": "b0b", "data": base64.b64encode(b"\x00hi").decode()},
            {"from": None, "node_id": "c4r", "data": ""},
        ):
            writer.write(frame(_ws.TEXT, json.dumps(message).encode()))
        await reader.read()

    async def body() -> None:
        async with unix_server(daemon) as path:
            m = burrow.Mesh(socket=path)
            assert await m.recv() == ("bob", b"\x00hi")
            assert await m.recv() == ("c4r", b"")  # no name: its node id
            assert m.datagrams_missed == 2
            await m.close()

    run(body())
    assert paths == ["GET /v1/datagrams HTTP/1.1"]  # one WebSocket for every recv
