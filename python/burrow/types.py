"""The small records the API answers with. Each is built from the answer's JSON by
:func:`from_json`, which ignores keys it does not know (answers may gain keys)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def from_json(cls: type[T], data: dict[str, Any]) -> T:
    """``cls`` from a JSON object: its fields by name, ``None`` for a key missing."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return cls(**{n: data.get(n) for n in names})


@dataclass(frozen=True)
class Relay:
    """A relay the daemon uses."""

    url: str
    home: bool
    #: ``connecting``, ``connected``, ``backoff`` or ``closed``.
    state: str
    rtt_ms: float | None
    connects: int
    error: str | None


@dataclass(frozen=True)
class MeshInfo:
    """The mesh a daemon runs, as ``status()`` tells it."""

    name: str
    mesh_id: str
    node_name: str
    #: ``admin`` or ``member``.
    role: str
    number: int
    members_online: int
    members_total: int


@dataclass(frozen=True)
class Status:
    """The daemon's node: ``GET /v1/status``."""

    node_id: str
    version: str
    uptime_ms: int
    ticket: str
    addrs: list[str]
    #: ``easy``, ``hard``, ``open``, or ``None`` (not known yet).
    nat_type: str | None
    relays: list[Relay]
    #: ``None`` on a daemon in no mesh yet (waiting for :meth:`burrow.Mesh.join`).
    mesh: MeshInfo | None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Status:
        """From the answer's JSON."""
        status = from_json(cls, data)
        mesh = data.get("mesh")
        return dataclasses.replace(
            status,
            relays=[from_json(Relay, r) for r in data.get("relays") or []],
            mesh=from_json(MeshInfo, mesh) if mesh else None,
        )


@dataclass(frozen=True)
class Peer:
    """Another member of the mesh and how this node reaches it."""

    name: str
    node_id: str
    online: bool
    #: ``direct`` or ``relay`` while online, else ``None``.
    path: str | None
    #: The member's direct address, or the relay's URL.
    remote_addr: str | None
    rtt_ms: float | None
    #: What the member told of its NAT: ``easy``, ``hard``, ``open`` or ``None``.
    nat_type: str | None
    #: Unix seconds: now while online, ``None`` if not seen since the daemon started.
    last_seen: int | None


@dataclass(frozen=True)
class Member(Peer):
    """A member of the mesh, this node included (``me``)."""

    number: int
    #: ``admin`` or ``member``.
    role: str
    me: bool


@dataclass(frozen=True)
class Invite:
    """An invite: the token, and the short code if one was asked for."""

    token: str
    #: ``MESH-XXXX-XXXX-XXXX``, or ``None``.
    code: str | None
    #: Unix seconds.
    expires: int
    uses: int


@dataclass(frozen=True)
class Joined:
    """How this node joined a mesh."""

    mesh: str
    #: ``direct`` or ``relay``: the path to the inviter when it answered.
    path: str
    remote_addr: str | None
    name: str
    number: int
    node_id: str


@dataclass(frozen=True)
class Pong:
    """One round trip to a member."""

    node_id: str
    path: str
    remote_addr: str | None
    rtt_ms: float


@dataclass(frozen=True)
class Exposed:
    """A port of this node that members may open forwards to."""

    port: int
    name: str | None


@dataclass(frozen=True)
class Forward:
    """A local TCP listener whose connections go to a member's exposed port."""

    member: str
    node_id: str
    port: int
    #: ``HOST:PORT`` of the local listener.
    local: str

    @property
    def address(self) -> tuple[str, int]:
        """:attr:`local` as ``(host, port)``."""
        return split_addr(self.local)


def split_addr(addr: str) -> tuple[str, int]:
    """``"127.0.0.1:80"`` or ``"[::1]:80"`` as ``(host, port)``."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def join_addr(addr: str | tuple[str, int]) -> str:
    """``(host, port)`` as ``"host:port"`` (``[host]:port`` for IPv6); a string as it is."""
    if isinstance(addr, str):
        return addr
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
