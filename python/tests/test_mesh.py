"""The package against real daemons: status, peers, members, invites, joins, kicks, pings,
events, the TCP listener, and the typed errors of the routes that exist today."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import tempfile

import pytest
from conftest import Node, Nodes, eventually, free_port, run

import burrow
import burrow.sync


def test_status_peers_members(pair: tuple[Node, Node]) -> None:
    alice, bob = pair

    async def body() -> None:
        async with alice.mesh() as m:
            status = await m.status()
            assert status.mesh is not None
            assert (status.mesh.name, status.mesh.node_name, status.mesh.role) == (
                "lab", "alice", "admin",
            )
            assert status.mesh.members_total == 2
            assert status.relays and status.relays[0].url == alice.relay
            members = await m.members()
            assert {(x.name, x.me, x.role) for x in members} == {
                ("alice", True, "admin"), ("bob", False, "member"),
            }
            peers = await m.peers()
            assert [p.name for p in peers] == ["bob"]
            assert peers[0].online and peers[0].path in ("direct", "relay")
            assert isinstance(peers[0], burrow.Peer) and not isinstance(peers[0], burrow.Member)
            assert peers[0].node_id == (await bob.mesh().status()).node_id

    run(body())


def test_ping_by_name_and_node_id(pair: tuple[Node, Node]) -> None:
    alice, bob = pair

    async def body() -> None:
        m = alice.mesh()
        bob_id = (await bob.mesh().status()).node_id
        pong = await m.ping("bob")
        assert pong.node_id == bob_id and pong.rtt_ms >= 0 and pong.path in ("direct", "relay")
        assert (await m.ping(bob_id)).node_id == bob_id
        with pytest.raises(burrow.UnknownMember):
            await m.ping("nobody")

    run(body())


def test_invite_join_through_the_api_and_events(nodes: Nodes) -> None:
    alice = nodes.admin()
    carol = nodes.new("carol")
    carol.up()  # in no mesh yet: the lobby, waiting for POST /v1/join

    async def body() -> None:
        async with alice.mesh() as a, carol.mesh() as c:
            assert (await c.status()).mesh is None
            assert await c.members() == []
            invite = await a.invite(expires=600, uses=1, code=True)
            assert invite.token.startswith("burrowinvite")
            assert invite.code is not None and invite.code.startswith("MESH-")
            assert invite.uses == 1
            async with a.events() as events:
                joined = await c.join(invite.token, name="carol")
                assert (joined.mesh, joined.name, joined.number) == ("lab", "carol", 2)
                seen: dict[str, dict[str, object]] = {}
                async for event in events:
                    seen.setdefault(str(event["event"]), event)
                    if {"member_joined", "peer_up"} <= seen.keys():
                        break
                assert seen["member_joined"] == {
                    "event": "member_joined", "node_id": joined.node_id, "name": "carol",
                }
                assert seen["peer_up"]["node_id"] == joined.node_id

            async def carol_runs_the_mesh() -> bool:
                try:
                    status = await c.status()
                except burrow.DaemonNotRunning:  # the lobby hands the socket over
                    return False
                return status.mesh is not None and status.mesh.node_name == "carol"

            await eventually(carol_runs_the_mesh)
            with pytest.raises(burrow.AlreadyMember) as e:
                await c.join(invite.token)
            assert e.value.status == 409

    run(body())


def test_kick(pair: tuple[Node, Node]) -> None:
    alice, bob = pair

    async def body() -> None:
        async with alice.mesh() as a, bob.mesh() as b:
            bob_id = (await b.status()).node_id
            with pytest.raises(burrow.NotAdmin) as e:
                await b.kick("alice")
            assert (e.value.code, e.value.status) == ("not_admin", 403)
            with pytest.raises(burrow.NotAdmin):
                await b.invite()
            async with a.events() as events:
                assert await a.kick("bob") == bob_id
                async for event in events:
                    if event["event"] == "member_revoked":
                        assert event["node_id"] == bob_id
                        break
            assert [m.name for m in await a.members()] == ["alice"]
            with pytest.raises(burrow.UnknownMember) as e2:
                await a.kick("bob")
            assert isinstance(e2.value, burrow.NotAMember) and e2.value.status == 404

    run(body())


def test_join_errors(nodes: Nodes) -> None:
    """Expired, used and tampered invites are refused as ``join_refused`` (403). Which
    refusal it is (the ``reason``) is checked in test_forwarding.py, for daemons that
    send it."""
    alice = nodes.admin()
    dave = nodes.new("dave")
    dave.up()

    async def body() -> None:
        async with alice.mesh() as a, dave.mesh() as d:
            expired = await a.invite(expires=1)
            await asyncio.sleep(2.2)
            with pytest.raises(burrow.JoinRefused) as e:
                await d.join(expired.token, name="dave")
            assert (e.value.code, e.value.status) == ("join_refused", 403)
            assert "expired" in e.value.message

            token = (await a.invite()).token
            i = len(token) // 2
            tampered = token[:i] + ("a" if token[i] != "a" else "b") + token[i + 1 :]
            with pytest.raises(burrow.JoinRefused):
                await d.join(tampered, name="dave")

            with pytest.raises(burrow.JoinRefused) as e:
                await d.join(token, name="alice")  # the name is taken
            assert "taken" in e.value.message

            with pytest.raises(burrow.BadRequest):
                await d.join("x", relays=["not a url"])

    run(body())


def test_a_used_invite_is_refused(nodes: Nodes) -> None:
    alice = nodes.admin()
    erin, frank = nodes.new("erin"), nodes.new("frank")
    erin.up()
    frank.up()

    async def body() -> None:
        token = (await alice.mesh().invite(uses=1)).token
        await erin.mesh().join(token, name="erin")
        with pytest.raises(burrow.JoinRefused) as e:
            await frank.mesh().join(token, name="frank")
        assert e.value.status == 403

    run(body())


def test_daemon_not_running() -> None:
    async def body() -> None:
        with pytest.raises(burrow.DaemonNotRunning) as e:
            await burrow.Mesh(socket="/nonexistent/burrow/api.sock").status()
        assert "burrow up" in str(e.value) and e.value.status is None
        with tempfile.TemporaryDirectory(prefix="bw") as d:
            path = f"{d}/api.sock"  # a socket file nobody listens on (a daemon that died)
            s = socket.socket(socket.AF_UNIX)
            s.bind(path)
            s.close()
            with pytest.raises(burrow.DaemonNotRunning):
                await burrow.Mesh(socket=path).members()
        with pytest.raises(burrow.DaemonNotRunning):
            await burrow.Mesh(tcp=f"127.0.0.1:{free_port()}", token="x").status()

    run(body())


def test_the_default_socket_follows_xdg(nodes: Nodes) -> None:
    alice = nodes.admin()
    assert burrow.default_socket(alice.env) == alice.socket
    assert burrow.Mesh(env=alice.env).address == str(alice.socket)
    assert run(burrow.Mesh(env=alice.env).status()).mesh is not None


def test_tcp_listener_with_token(nodes: Nodes) -> None:
    alice = nodes.new("alice")
    alice.init()
    alice.up("--api-listen", "127.0.0.1:0")
    up = alice.up_event("up")
    tcp, token_file = up["api_tcp"], up["api_token_file"]

    async def body() -> None:
        async with burrow.Mesh(tcp=tcp, token_file=token_file) as m:
            assert (await m.status()).mesh.name == "lab"  # type: ignore[union-attr]
            async with m.events():
                pass  # the WebSocket upgrade carries the token too
        assert (await burrow.Mesh(tcp=tcp, env=alice.env).members())[0].name == "alice"
        with pytest.raises(burrow.Unauthorized) as e:
            await burrow.Mesh(tcp=tcp, token="0" * 64).status()
        assert e.value.status == 401

    run(body())


def test_the_sync_facade(pair: tuple[Node, Node]) -> None:
    alice, _ = pair
    with burrow.sync.Mesh(socket=alice.socket) as m:
        assert m.status().mesh.node_name == "alice"  # type: ignore[union-attr]
        assert [p.name for p in m.peers()] == ["bob"]
        assert m.ping("bob").rtt_ms >= 0
        invite = m.invite(expires=60)
        assert invite.code is None
        with pytest.raises(burrow.UnknownMember):
            m.kick("nobody")
        with m.events() as events:
            m.kick("bob")
            while events.next(timeout=10)["event"] != "member_revoked":
                pass


def test_python_m_burrow(pair: tuple[Node, Node]) -> None:
    alice, _ = pair
    out = subprocess.run(
        [sys.executable, "-m", "burrow", "members"], env=alice.env, capture_output=True,
        text=True, timeout=30, check=True,
    ).stdout
    assert {m["name"] for m in json.loads(out)} == {"alice", "bob"}
