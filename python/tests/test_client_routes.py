"""The calls of the routes being added on the Rust side (expose, forwards, datagrams),
against a fake daemon: the requests they send and how they read the answers. (The same
calls against a real daemon are in test_forwarding.py.)"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any

from conftest import read_request, run, unix_server

import burrow


def fake_daemon(
    answers: dict[str, Any], seen: list[tuple[str, Any]]
) -> contextlib.AbstractAsyncContextManager[str]:
    """A server answering ``"METHOD /path"`` with its JSON; ``seen`` gets each request."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, _, body = await read_request(reader)
        key = line.rsplit(" ", 1)[0]
        seen.append((key, json.loads(body) if body else None))
        data = json.dumps(answers[key]).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))

    return unix_server(handler)


def test_expose_forward_and_datagram_requests() -> None:
    seen: list[tuple[str, Any]] = []
    answers = {
        "POST /v1/expose": {"port": 5555, "name": "zmq"},
        "GET /v1/expose": {"exposed": [{"port": 5555, "name": "zmq"}, {"port": 80, "name": None}]},
        "DELETE /v1/expose/5555": {"port": 5555},
        "POST /v1/forwards": {"member": "bob", "node_id": "b0b", "port": 5555,
                              "local": "127.77.0.3:5555"},
        "GET /v1/forwards": {"forwards": [{"member": "bob", "node_id": "b0b", "port": 5555,
                                           "local": "[::1]:7000", "new_key": 1}]},
        "DELETE /v1/forwards/127.77.0.3:5555": {"local": "127.77.0.3:5555"},
        "POST /v1/datagrams": {"sent": 3},
    }

    async def body() -> None:
        async with fake_daemon(answers, seen) as path:
            m = burrow.Mesh(socket=path)
            assert await m.expose(5555, name="zmq") == burrow.Exposed(5555, "zmq")
            assert [e.port for e in await m.exposed()] == [5555, 80]
            await m.unexpose(5555)
            assert await m.forward("bob", 5555) == ("127.77.0.3", 5555)
            [fwd] = await m.forwards()
            assert (fwd.member, fwd.address) == ("bob", ("::1", 7000))
            await m.unforward(("127.77.0.3", 5555))
            assert await m.send("bob", b"\x00\x01\xff") == 3

    run(body())
    assert seen == [
        ("POST /v1/expose", {"port": 5555, "name": "zmq"}),
        ("GET /v1/expose", None),
        ("DELETE /v1/expose/5555", None),
        ("POST /v1/forwards", {"member": "bob", "port": 5555}),
        ("GET /v1/forwards", None),
        ("DELETE /v1/forwards/127.77.0.3:5555", None),
        ("POST /v1/datagrams", {"member": "bob", "data": base64.b64encode(b"\0\1\xff").decode()}),
    ]


def test_a_forward_at_a_chosen_local_address() -> None:
    seen: list[tuple[str, Any]] = []
    answer = {"member": "bob", "node_id": "b0b", "port": 22, "local": "127.0.0.1:7000"}

    async def body() -> None:
        async with fake_daemon({"POST /v1/forwards": answer}, seen) as path:
            assert await burrow.Mesh(socket=path).forward("bob", 22, ("127.0.0.1", 7000)) == (
                "127.0.0.1", 7000,
            )

    run(body())
    assert seen == [("POST /v1/forwards", {"member": "bob", "port": 22, "local": "127.0.0.1:7000"})]
