"""``Mesh(spawn=True)``: starts ``burrow up`` when none answers, and never leaves it behind:
not when the Mesh closes, not when the program exits without closing it, not when the
program is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import Node, Nodes, gone, run

import burrow
import burrow.sync


def spawned(node: Node, **kwargs: object) -> burrow.Mesh:
    return burrow.Mesh(spawn=True, env=node.env, up_args=Node.UP_ARGS, **kwargs)  # type: ignore[arg-type]


def test_spawn_starts_and_stops_the_daemon(nodes: Nodes) -> None:
    alice = nodes.new("alice")
    alice.init()

    async def body() -> int:
        async with spawned(alice, burrow=alice.bin) as m:
            pid = m.pid
            assert pid is not None and not gone(pid)
            status = await m.status()
            assert status.mesh is not None and status.mesh.node_name == "alice"
        assert m.pid is None
        return pid

    pid = run(body())
    assert gone(pid)
    assert not alice.socket.exists()


def test_spawn_uses_a_running_daemon(nodes: Nodes) -> None:
    alice = nodes.admin()

    async def body() -> None:
        async with spawned(alice) as m:
            assert m.pid is None  # alice's own daemon answered: nothing started
            assert (await m.status()).mesh is not None
        assert (await alice.mesh().status()).mesh is not None  # and it still runs

    run(body())


def test_spawn_with_burrow_bin_and_the_sync_facade(nodes: Nodes) -> None:
    alice = nodes.new("alice")
    alice.init()
    env = alice.env | {"BURROW_BIN": alice.bin}
    with burrow.sync.Mesh(spawn=True, env=env, up_args=Node.UP_ARGS) as m:
        pid = m.pid
        assert pid is not None
        assert m.members()[0].name == "alice"
    assert gone(pid)


def test_spawn_a_node_in_no_mesh_then_join(nodes: Nodes) -> None:
    alice = nodes.admin()
    bob = nodes.new("bob")

    async def body() -> None:
        token = (await alice.mesh().invite()).token
        async with spawned(bob) as m:
            assert (await m.status()).mesh is None
            joined = await m.join(token, name="bob")
            assert joined.mesh == "lab"
            pid = m.pid
        assert pid is not None and gone(pid)

    run(body())


def test_a_daemon_that_exits_at_once_is_a_clear_error(nodes: Nodes) -> None:
    alice = nodes.new("alice")

    async def body() -> None:
        with pytest.raises(burrow.SpawnFailed) as e:
            await spawned(alice, burrow="/bin/false").connect()
        assert "exited with 1" in str(e.value)
        with pytest.raises(burrow.SpawnFailed) as e:
            await spawned(alice, burrow="/nonexistent/burrow").connect()
        assert "cannot start" in str(e.value)

    run(body())


def test_a_daemon_that_never_answers_times_out_and_is_stopped(
    nodes: Nodes, tmp_path: Path
) -> None:
    alice = nodes.new("alice")
    fake = tmp_path / "burrow"
    fake.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/pid\nexec sleep 60\n")
    fake.chmod(0o755)

    async def body() -> None:
        started = time.monotonic()
        with pytest.raises(burrow.SpawnFailed) as e:
            await spawned(alice, burrow=str(fake), spawn_timeout=1.0).connect()
        assert "did not answer" in str(e.value)
        assert time.monotonic() - started < 10

    run(body())
    assert gone(int((tmp_path / "pid").read_text()))


PROGRAM = textwrap.dedent(
    """
    import asyncio, os, sys, time
    import burrow

    async def main():
        m = burrow.Mesh(spawn=True, up_args=["--no-mdns", "--bind", "127.0.0.1:0"])
        await m.connect()
        print(m.pid, flush=True)
        if sys.argv[1] == "hang":
            time.sleep(60)
        # "exit": leave without closing the Mesh

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_no_orphan_when_the_program_ends(nodes: Nodes, how: str) -> None:
    """The program exits without closing the Mesh (the atexit hook stops the daemon), or is
    killed with SIGKILL (``burrow up --exit-with-parent`` stops itself)."""
    alice = nodes.new("alice")
    alice.init()
    env = alice.env | {"BURROW_BIN": alice.bin}
    child = subprocess.Popen(
        [sys.executable, "-c", PROGRAM, "exit" if how == "exit" else "hang"],
        env=env, stdout=subprocess.PIPE, text=True,
    )
    pid = 0
    try:
        assert child.stdout is not None
        pid = int(child.stdout.readline())
        assert not gone(pid)
        if how == "sigkill":
            os.kill(child.pid, signal.SIGKILL)
        child.wait(15)
        deadline = time.monotonic() + 10
        while not gone(pid):
            assert time.monotonic() < deadline, f"burrow up (pid {pid}) outlived its program"
            time.sleep(0.1)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdout is not None
        child.stdout.close()
        if pid and not gone(pid):  # the test failed: still, leave nothing behind
            os.kill(pid, signal.SIGTERM)
