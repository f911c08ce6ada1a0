"""Datagrams, streams, exposed ports and forwards, and the reasons of refused joins, between
real daemons. These need routes being added on the Rust side: on a daemon without them they
fail (``not_found``), never skip. Select them with ``-m needs_forwarding``."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Awaitable, Callable

import pytest
from conftest import Node, Nodes, eventually, free_port, run

import burrow

pytestmark = pytest.mark.needs_forwarding


def test_100_datagrams(pair: tuple[Node, Node]) -> None:
    alice, bob = pair

    async def body() -> None:
        async with alice.mesh() as a, bob.mesh() as b:
            await b.open_datagrams()
            sent = {f"datagram {i}".encode() for i in range(100)}
            for data in sorted(sent):
                assert await a.send("bob", data) == len(data)
            got: set[bytes] = set()
            while got != sent:
                sender, data = await asyncio.wait_for(b.recv(), 10)
                assert sender == "alice"
                got.add(data)

    run(body())


def test_a_10_mb_stream_both_ways(pair: tuple[Node, Node]) -> None:
    alice, bob = pair
    payload = os.urandom(10 * 1024 * 1024)

    async def body() -> None:
        async with alice.mesh() as a, bob.mesh() as b:

            async def bob_side() -> str:
                name, stream = await b.accept_stream()
                assert name == "alice"
                digest = hashlib.sha256()
                async for chunk in stream:
                    digest.update(chunk)
                stream.write(digest.hexdigest().encode())
                await stream.close_write()
                await stream.close()
                return digest.hexdigest()

            accepting = asyncio.create_task(bob_side())
            try:  # opened before or after bob accepts: the daemon holds it (10 s) either way
                async with await a.open_stream("bob") as stream:
                    for i in range(0, len(payload), 256 * 1024):
                        stream.write(payload[i : i + 256 * 1024])
                        await stream.drain()
                    await stream.close_write()
                    answer = await stream.read()
                expected = hashlib.sha256(payload).hexdigest()
                assert await accepting == expected
                assert answer.decode() == expected
            finally:
                accepting.cancel()

    run(body(), timeout=180)


async def echo_server() -> tuple[asyncio.AbstractServer, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


def closed(host: str, port: int) -> Callable[[], Awaitable[bool]]:
    """Whether nothing listens at ``host:port`` (the daemon closes an unforwarded listener
    a moment after it answers, so this is waited for)."""

    async def refused() -> bool:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except ConnectionRefusedError:
            return True
        writer.close()
        return False

    return refused


def test_expose_and_forward_an_echo_server(pair: tuple[Node, Node]) -> None:
    alice, bob = pair

    async def body() -> None:
        server, port = await echo_server()
        async with server, alice.mesh() as a, bob.mesh() as b:
            assert await b.expose(port, name="echo") == burrow.Exposed(port, "echo")
            assert burrow.Exposed(port, "echo") in await b.exposed()
            host, local_port = await a.forward("bob", port)
            [fwd] = [f for f in await a.forwards() if f.address == (host, local_port)]
            assert (fwd.member, fwd.port) == ("bob", port)
            reader, writer = await asyncio.open_connection(host, local_port)
            message = os.urandom(100_000)
            writer.write(message)
            await writer.drain()
            assert await reader.readexactly(len(message)) == message
            writer.close()
            await a.unforward((host, local_port))
            assert (host, local_port) not in [f.address for f in await a.forwards()]
            await eventually(closed(host, local_port), timeout=2)
            await b.unexpose(port)
            assert port not in [e.port for e in await b.exposed()]

            chosen = ("127.0.0.1", free_port())
            await b.expose(port)
            assert await a.forward("bob", port, local=chosen) == chosen
            await a.unforward(chosen)

    run(body())


def test_an_unexposed_port_is_refused_at_once(pair: tuple[Node, Node]) -> None:
    alice, _ = pair

    async def body() -> None:
        server, port = await echo_server()  # listening, but bob never exposed it
        async with server, alice.mesh() as a:
            try:
                host, local_port = await a.forward("bob", port)
            except burrow.BurrowError as e:
                assert e.code != "not_found", f"the daemon has no forwards: {e}"
                return  # refused when the forward is made: at once
            started = time.monotonic()
            reader, writer = await asyncio.open_connection(host, local_port)
            writer.write(b"hello?")
            try:
                data = await asyncio.wait_for(reader.read(100), 3)
            except ConnectionResetError:
                data = b""
            assert data == b"", "bob's echo server was reached through a port it never exposed"
            assert time.monotonic() - started < 2
            writer.close()

    run(body())


def test_unknown_and_offline_members(nodes: Nodes) -> None:
    alice = nodes.admin()
    bob = nodes.member(alice, "bob")

    async def body() -> None:
        async with alice.mesh() as a:
            with pytest.raises(burrow.UnknownMember):
                await a.open_stream("nobody")
            with pytest.raises(burrow.UnknownMember):
                await a.send("nobody", b"x")
            with pytest.raises(burrow.UnknownMember):
                await a.forward("nobody", 80)
            await asyncio.to_thread(bob.stop)
            while any(m.online for m in await a.peers()):
                await asyncio.sleep(0.1)
            with pytest.raises(burrow.MemberOffline) as e:
                await a.open_stream("bob")
            assert (e.value.code, e.value.status) == ("member_offline", 409)

    run(body())


def change_last_symbol(code: str) -> str:
    return code[:-1] + ("2" if code[-1] != "2" else "3")


def test_join_refusals_say_why(nodes: Nodes) -> None:
    alice = nodes.admin()
    erin, dave = nodes.new("erin"), nodes.new("dave")
    erin.up()
    dave.up()

    async def body() -> None:
        async with alice.mesh() as a, dave.mesh() as d:
            expired = await a.invite(expires=1)
            await asyncio.sleep(2.2)
            with pytest.raises(burrow.InviteExpired) as e:
                await d.join(expired.token, name="dave")
            assert e.value.reason == "expired" and isinstance(e.value, burrow.JoinRefused)

            token = (await a.invite()).token
            i = len(token) // 2
            with pytest.raises(burrow.InviteInvalid):
                await d.join(token[:i] + ("a" if token[i] != "a" else "b") + token[i + 1 :])
            with pytest.raises(burrow.NameTaken):
                await d.join(token, name="alice")
            await erin.mesh().join(token, name="erin")
            with pytest.raises(burrow.InviteUsed):
                await d.join(token, name="dave")

            code = (await a.invite(code=True)).code
            assert code is not None
            with pytest.raises(burrow.WrongPassword):
                await d.join(change_last_symbol(code), relays=[alice.relay])
            for _ in range(2):  # the third wrong guess burns the code
                with pytest.raises((burrow.WrongPassword, burrow.CodeDead)):
                    await d.join(change_last_symbol(code), relays=[alice.relay])
            with pytest.raises(burrow.CodeDead):
                await d.join(code, relays=[alice.relay])

    run(body())
