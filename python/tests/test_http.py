"""The HTTP client against a tiny asyncio server: body framings, limits, the headers sent
(never Origin, Referer or Sec-Fetch-Site) and the mapping of error answers to exceptions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from conftest import read_request, run, unix_server

import burrow
from burrow import _http


def answer(status: str, headers: dict[str, str], body: bytes) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


async def ask(raw: list[bytes], method: str = "GET", body: Any = None, **target: Any) -> Any:
    """A request to a server that answers ``raw``, a piece at a time."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for piece in raw:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)

    async with unix_server(handler) as path:
        return await _http.request(_http.Target(socket=path, **target), method, "/v1/x", body)


def test_content_length_chunked_and_to_the_end() -> None:
    body = json.dumps({"ok": [1, 2, 3]}).encode()
    length = answer("200 OK", {"Content-Length": str(len(body))}, body)
    assert run(ask([length[:20], length[20:]])) == {"ok": [1, 2, 3]}
    chunked = answer("200 OK", {"Transfer-Encoding": "chunked"}, b"")
    pieces = [chunked, b"5;ext=1\r\n", body[:5], b"\r\n", f"{len(body) - 5:x}\r\n".encode(),
              body[5:] + b"\r\n", b"0\r\nX-Trailer: y\r\n\r\n"]
    assert run(ask(pieces)) == {"ok": [1, 2, 3]}
    assert run(ask([answer("200 OK", {"Connection": "close"}, body)])) == {"ok": [1, 2, 3]}
    interim = answer("100 Continue", {}, b"")
    assert run(ask([interim, length])) == {"ok": [1, 2, 3]}


def test_limits_and_broken_answers() -> None:
    with pytest.raises(burrow.ProtocolError, match="over"):
        run(ask([answer("200 OK", {"Content-Length": str(_http.MAX_BODY + 1)}, b"")]))
    with pytest.raises(burrow.ProtocolError, match="inside the response's body"):
        run(ask([answer("200 OK", {"Content-Length": "100"}, b"{}")]))
    with pytest.raises(burrow.ProtocolError, match="chunk size"):
        run(ask([answer("200 OK", {"Transfer-Encoding": "chunked"}, b"zz\r\n")]))
    with pytest.raises(burrow.ProtocolError, match="status line"):
        run(ask([b"SSH-2.0-OpenSSH\r\n\r\n"]))
    with pytest.raises(burrow.ProtocolError, match="before the response"):
        run(ask([b"HTTP/1.1 200 OK\r\n"]))
    with pytest.raises(burrow.ProtocolError, match="head over"):
        run(ask([b"HTTP/1.1 200 OK\r\nX: " + b"a" * _http.MAX_HEAD]))
    with pytest.raises(burrow.BurrowError, match="not JSON"):
        run(ask([answer("200 OK", {"Content-Length": "3"}, b"abc")]))


def test_a_chunked_body_over_the_limit() -> None:
    async def body() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"10\r\n" + b"a" * 16 + b"\r\n10\r\n" + b"b" * 16 + b"\r\n0\r\n\r\n")
        reader.feed_eof()
        with pytest.raises(burrow.ProtocolError, match="over 20"):
            await _http.read_body(reader, {"transfer-encoding": "chunked"}, limit=20)

    run(body())


def test_the_request_never_carries_origin_headers() -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        body = b'{"node_id": "n"}'
        writer.write(answer("200 OK", {"Content-Length": str(len(body))}, body))
        writer.close()

    async def body() -> int:
        async with unix_server(handler) as path:
            m = burrow.Mesh(socket=path)
            await m.kick("bob")
            try:
                async with m.events():
                    pass
            except burrow.BurrowError:
                pass  # a 200 is no upgrade: the handshake's headers are what we look at

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            await burrow.Mesh(tcp=f"127.0.0.1:{port}", token="t0k").status()
        return int(port)

    port = run(body())
    (kick_line, kick, kick_body), (ws_line, ws, _), (tcp_line, tcp, _) = seen
    for headers in (kick, ws, tcp):
        assert not {"origin", "referer", "sec-fetch-site"} & headers.keys()
    assert kick_line == "POST /v1/kick HTTP/1.1"
    assert kick["host"] == "localhost" and kick["content-type"] == "application/json"
    assert json.loads(kick_body) == {"member": "bob"}
    assert ws_line == "GET /v1/events HTTP/1.1" and ws["upgrade"] == "websocket"
    assert tcp["host"] == f"127.0.0.1:{port}" and tcp["authorization"] == "Bearer t0k"


def error(status: str, detail: dict[str, Any]) -> list[bytes]:
    body = json.dumps({"error": detail}).encode()
    return [answer(status, {"Content-Length": str(len(body))}, body)]


@pytest.mark.parametrize(
    ("status", "code", "reason", "cls"),
    [
        ("404 Not Found", "unknown_member", None, burrow.UnknownMember),
        ("409 Conflict", "member_offline", None, burrow.MemberOffline),
        ("404 Not Found", "not_exposed", None, burrow.NotExposed),
        ("404 Not Found", "unknown_forward", None, burrow.UnknownForward),
        ("409 Conflict", "forward_failed", None, burrow.ForwardFailed),
        ("502 Bad Gateway", "stream_refused", None, burrow.StreamRefused),
        ("403 Forbidden", "not_admin", None, burrow.NotAdmin),
        ("403 Forbidden", "forbidden_origin", None, burrow.ForbiddenOrigin),
        ("401 Unauthorized", "unauthorized", None, burrow.Unauthorized),
        ("409 Conflict", "already_member", None, burrow.AlreadyMember),
        ("502 Bad Gateway", "join_failed", None, burrow.JoinFailed),
        ("504 Gateway Timeout", "peer_timeout", None, burrow.PeerTimeout),
        ("403 Forbidden", "join_refused", "expired", burrow.InviteExpired),
        ("403 Forbidden", "join_refused", "used", burrow.InviteUsed),
        ("403 Forbidden", "join_refused", "revoked", burrow.InviteRevoked),
        ("403 Forbidden", "join_refused", "invalid", burrow.InviteInvalid),
        ("403 Forbidden", "join_refused", "wrong_password", burrow.WrongPassword),
        ("403 Forbidden", "join_refused", "code_dead", burrow.CodeDead),
        ("403 Forbidden", "join_refused", "name_taken", burrow.NameTaken),
        ("403 Forbidden", "join_refused", "refused", burrow.JoinRefused),
        ("403 Forbidden", "join_refused", "something_new", burrow.JoinRefused),
        ("403 Forbidden", "join_refused", None, burrow.JoinRefused),
        ("418 I'm a teapot", "a_code_from_the_future", None, burrow.BurrowError),
    ],
)
def test_error_answers_map_to_exceptions(
    status: str, code: str, reason: str | None, cls: type[burrow.BurrowError]
) -> None:
    detail = {"code": code, "message": "no"} | ({"reason": reason} if reason else {})
    with pytest.raises(cls) as e:
        run(ask(error(status, detail)))
    assert type(e.value) is cls
    assert (e.value.code, e.value.status, e.value.message) == (code, int(status[:3]), "no")
    if isinstance(e.value, burrow.JoinRefused):
        assert e.value.reason == (reason or "refused")
        assert isinstance(e.value, burrow.Forbidden)


def test_an_error_that_is_not_the_apis_json() -> None:
    with pytest.raises(burrow.BurrowError) as e:
        run(ask([answer("500 Oops", {"Content-Length": "4"}, b"oops")]))
    assert (e.value.code, e.value.status) == ("http_error", 500) and "oops" in e.value.message
