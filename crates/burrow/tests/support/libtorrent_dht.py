#!/usr/bin/python3
"""A private DHT of libtorrent sessions on loopback, driven over stdin/stdout JSON lines.

burrow's tests use it as an independent implementation of BEP 5 and BEP 44 (an oracle).
It needs Debian's ``python3-libtorrent`` and so Debian's own ``/usr/bin/python3``.

Each session is one DHT node on its own loopback address (127.0.0.2, .3, ...), with
libtorrent's private-address restrictions relaxed and every other way of reaching the
outside (bootstrap routers, LSD, UPnP, NAT-PMP) off. Unless ``--isolated``, the sessions
join each other with ``add_dht_node`` (nodes given as ``dht_bootstrap_nodes`` never enter a
routing table) and the helper waits until every routing table holds all the others.

Protocol: once ready, the helper prints ``{"event": "ready", "nodes": ["IP:PORT", ...]}``.
Then each line on stdin is one request, ``{"op": NAME, ...}``, and each gets exactly one
line back: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. Bytes travel as hex.
Ops (``session`` is an index into ``nodes``, 0 when left out):

* ``add_node {addr, session?}``: ``add_dht_node`` on that session, or on all without one.
* ``get {key, salt, timeout?, session?}``: ``dht_get_mutable_item``; replies ``found`` and,
  when found, ``seq``, ``value``, ``signature``; libtorrent checked the signature already.
* ``put {seed, public_key, salt, value, timeout?, session?}``: ``dht_put_mutable_item``
  signed with the Ed25519 key of that 32-byte seed (libtorrent reads the current item and
  stores it with ``seq`` + 1); replies ``seq`` and ``stored_at`` (nodes that took it).
* ``routing_table {session?}``: the nodes in its routing table, as ``IP:PORT``.
* ``replies {addr, session?}``: how many KRPC replies that session has had from ``addr``.

Every reply also has ``ms``, the time the op took. The helper exits when stdin closes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import traceback
import warnings
from collections import Counter
from typing import Any, Callable, Optional

import libtorrent as lt

# LIBTORRENT_DHT_LOG=1: every DHT packet and log line of every session on stderr.
LOG = bool(os.environ.get("LIBTORRENT_DHT_LOG"))

# What an alert said, copied out of it (see ``event``).
Event = dict[str, Any]

# dht_log_notification brings dht_pkt_alert, each packet (replies are counted from them).
ALERTS = (
    lt.alert.category_t.dht_notification
    | lt.alert.category_t.dht_operation_notification
    | lt.alert.category_t.dht_log_notification
    | lt.alert.category_t.error_notification
)


def settings(ip: str) -> dict[str, Any]:
    """Session settings: a DHT node on ``ip`` that talks to nobody it was not given."""
    return {
        "listen_interfaces": f"{ip}:0",
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # Loopback peers are "private": let them into routing tables and lookups.
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False,
        # 0 (unlimited) crashes libtorrent 2.0.8; a large limit is as good.
        "dht_upload_rate_limit": 1 << 30,
        "alert_mask": ALERTS,
    }


def libtorrent_secret(seed: bytes) -> bytes:
    """The 64-byte Ed25519 secret libtorrent signs with: SHA-512 of the seed, clamped."""
    h = bytearray(hashlib.sha512(seed).digest())
    h[0] &= 248
    h[31] &= 63
    h[31] |= 64
    return bytes(h)


class Node:
    """One libtorrent session acting as a DHT node, and the alerts it has posted."""

    def __init__(self, ip: str) -> None:
        self.session = lt.session(settings(ip))
        self.ip = ip
        self.pending: list[Event] = []
        self.replies: Counter[str] = Counter()

    @property
    def addr(self) -> str:
        """The node's UDP address, ``IP:PORT``."""
        return f"{self.ip}:{self.session.listen_port()}"

    def pump(self) -> None:
        """Takes the session's new alerts: counts replies, keeps the rest for ``wait``."""
        for alert in self.session.pop_alerts():
            if LOG and isinstance(alert, (lt.dht_pkt_alert, lt.dht_log_alert)):
                print(f"{time.monotonic():.3f} {self.ip} {alert.message()}", file=sys.stderr)
            if isinstance(alert, lt.dht_pkt_alert):
                self.count_reply(alert)
            else:
                e = event(alert)
                if e is not None:
                    self.pending.append(e)

    def count_reply(self, alert: Any) -> None:
        """Counts an incoming KRPC reply (``y`` = ``r``) by its sender's address."""
        # The message reads "<== [IP:PORT] { ... }" for packets received.
        message = alert.message()
        if not message.startswith("<== ["):
            return
        sender = message[len("<== [") : message.index("]")]
        packet = lt.bdecode(alert.pkt_buf)
        if isinstance(packet, dict) and packet.get(b"y") == b"r":
            self.replies[sender] += 1

    def wait(self, match: Callable[[Event], bool], timeout: float) -> Event:
        """The first event for which ``match`` is true, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            for i, e in enumerate(self.pending):
                if match(e):
                    return self.pending.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("libtorrent posted no alert for it in time")
            self.session.wait_for_alert(int(min(left, 0.1) * 1000) + 1)

    def node_id(self) -> bytes:
        """This node's 20-byte DHT id."""
        # dht_state() is deprecated in 2.0 but is the bindings' one way to the node id.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            state = self.session.dht_state()
        return state[b"node-id"][0][:20]

    def routing_table(self, timeout: float = 5.0) -> list[str]:
        """The nodes in its routing table, as ``IP:PORT``."""
        self.session.dht_live_nodes(lt.sha1_hash(self.node_id()))
        return self.wait(lambda e: e["kind"] == "live_nodes", timeout)["nodes"]

    def get(self, key: bytes, salt: bytes, timeout: float) -> dict[str, Any]:
        """Looks up the mutable item under ``key`` and ``salt``; waits for the final answer."""
        self.session.dht_get_mutable_item(key, salt)
        e = self.wait(
            lambda e: e["kind"] == "item"
            and (e["key"], e["salt"]) == (key, salt)
            and e["authoritative"],
            timeout,
        )
        if e["value"] is None:
            return {"found": False}
        return {
            "found": True,
            "seq": e["seq"],
            "value": e["value"].hex(),
            "signature": e["signature"].hex(),
        }

    def put(
        self, seed: bytes, public_key: bytes, salt: bytes, value: bytes, timeout: float
    ) -> dict[str, Any]:
        """Stores ``value`` as a mutable item signed by ``seed``'s key; waits for the result."""
        secret = libtorrent_secret(seed)
        self.session.dht_put_mutable_item(secret, public_key, value, salt)
        e = self.wait(
            lambda e: e["kind"] == "put" and (e["key"], e["salt"]) == (public_key, salt),
            timeout,
        )
        return {"seq": e["seq"], "stored_at": e["stored_at"]}


def event(alert: Any) -> Optional[Event]:
    """What an alert of interest says, copied out (libtorrent frees every alert at the
    next ``pop_alerts``, so none may be kept)."""
    if isinstance(alert, lt.dht_mutable_item_alert):
        try:
            # The bindings give a dict of the alert's fields, the item's string as "value".
            item = alert.item
            value = item.get("value", item.get(b"value"))
        except RuntimeError:
            # Nothing found: the entry is uninitialized (and so is the signature).
            value = None
        return {
            "kind": "item",
            "key": alert.key,
            "salt": salt_of(alert),
            "authoritative": alert.authoritative,
            "seq": alert.seq,
            "value": value,
            "signature": alert.signature,
        }
    if isinstance(alert, lt.dht_put_alert):
        return {
            "kind": "put",
            "key": alert.public_key,
            "salt": salt_of(alert),
            "seq": alert.seq,
            "stored_at": alert.num_success,
        }
    if isinstance(alert, lt.dht_live_nodes_alert):
        nodes = [f"{n['endpoint'][0]}:{n['endpoint'][1]}" for n in alert.nodes]
        return {"kind": "live_nodes", "nodes": nodes}
    return None


def salt_of(alert: Any) -> bytes:
    """An alert's salt as bytes (the bindings hand it over as a UTF-8 ``str``)."""
    salt = alert.salt
    return salt.encode() if isinstance(salt, str) else salt


def parse_addr(addr: str) -> tuple[str, int]:
    """``IP:PORT`` as libtorrent's ``(host, port)``."""
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def join(nodes: list[Node], timeout: float) -> None:
    """Has every node add every other, and waits until all routing tables are full."""
    for node in nodes:
        for other in nodes:
            if other is not node:
                node.session.add_dht_node(parse_addr(other.addr))
    deadline = time.monotonic() + timeout
    for node in nodes:
        while len(node.routing_table()) < len(nodes) - 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node.addr} did not meet every other node")
            time.sleep(0.05)


def handle(nodes: list[Node], request: dict[str, Any]) -> dict[str, Any]:
    """Runs one request and returns its reply (without ``ok`` and ``ms``)."""
    op = request["op"]
    node = nodes[request.get("session", 0)]
    timeout = float(request.get("timeout", 10))
    if op == "add_node":
        targets = nodes if "session" not in request else [node]
        for n in targets:
            n.session.add_dht_node(parse_addr(request["addr"]))
        return {}
    if op == "get":
        key, salt = bytes.fromhex(request["key"]), bytes.fromhex(request["salt"])
        return node.get(key, salt, timeout)
    if op == "put":
        return node.put(
            bytes.fromhex(request["seed"]),
            bytes.fromhex(request["public_key"]),
            bytes.fromhex(request["salt"]),
            bytes.fromhex(request["value"]),
            timeout,
        )
    if op == "routing_table":
        return {"nodes": node.routing_table()}
    if op == "replies":
        node.pump()
        return {"replies": node.replies[request["addr"]]}
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    """Starts the sessions, says so, then serves requests until stdin closes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4, help="DHT nodes to run")
    parser.add_argument(
        "--isolated", action="store_true", help="do not join the sessions to each other"
    )
    args = parser.parse_args()
    if not 1 <= args.sessions <= 200:
        parser.error("--sessions must be between 1 and 200")

    nodes = [Node(f"127.0.0.{i + 2}") for i in range(args.sessions)]
    if not args.isolated:
        join(nodes, timeout=20)
    print(json.dumps({"event": "ready", "nodes": [n.addr for n in nodes]}), flush=True)

    for line in sys.stdin:
        if not line.strip():
            continue
        start = time.monotonic()
        try:
            reply = {"ok": True, **handle(nodes, json.loads(line))}
        except Exception as e:  # one bad request must not end the helper
            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        reply["ms"] = round((time.monotonic() - start) * 1000, 1)
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
