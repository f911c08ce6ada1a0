"""burrow from Python: a client of the local API of ``burrow up``.

>>> import asyncio, burrow
>>> async def main() -> None:
...     async with burrow.Mesh() as mesh:
...         for peer in await mesh.peers():
...             print(peer.name, peer.online, peer.path, peer.rtt_ms)
>>> asyncio.run(main())  # doctest: +SKIP

:class:`Mesh` is the asyncio client; :mod:`burrow.sync` has the same calls without asyncio.
"""

from .errors import (
    AlreadyMember,
    BadRequest,
    BurrowError,
    CodeDead,
    ConnectionClosed,
    DaemonNotRunning,
    Forbidden,
    ForbiddenHost,
    ForbiddenOrigin,
    ForbiddenUser,
    ForwardFailed,
    InternalError,
    InviteExpired,
    InviteInvalid,
    InviteRevoked,
    InviteUsed,
    JoinFailed,
    JoinRefused,
    MemberOffline,
    MethodNotAllowed,
    NameTaken,
    NotAdmin,
    NotAMember,
    NotExposed,
    NotFound,
    PayloadTooLarge,
    PeerTimeout,
    ProtocolError,
    RequestTimeout,
    SpawnFailed,
    StreamFailed,
    StreamRefused,
    Unauthorized,
    UnknownForward,
    UnknownMember,
    UnknownPeer,
    WrongPassword,
)
from .mesh import Events, Mesh, default_socket, state_dir
from .stream import Stream
from .types import Exposed, Forward, Invite, Joined, Member, MeshInfo, Peer, Pong, Relay, Status

__version__ = "0.1.0"

__all__ = [
    "AlreadyMember", "BadRequest", "BurrowError", "CodeDead", "ConnectionClosed",
    "DaemonNotRunning", "Events", "Exposed", "Forbidden", "ForbiddenHost", "ForbiddenOrigin",
    "ForbiddenUser", "Forward", "ForwardFailed", "InternalError", "Invite", "InviteExpired",
    "InviteInvalid", "InviteRevoked", "InviteUsed", "JoinFailed", "JoinRefused", "Joined",
    "Member", "MemberOffline", "Mesh", "MeshInfo", "MethodNotAllowed", "NameTaken", "NotAMember",
    "NotAdmin", "NotExposed", "NotFound", "PayloadTooLarge", "Peer", "PeerTimeout", "Pong",
    "ProtocolError", "Relay", "RequestTimeout", "SpawnFailed", "Status", "Stream", "StreamFailed",
    "StreamRefused", "Unauthorized", "UnknownForward", "UnknownMember", "UnknownPeer",
    "WrongPassword", "default_socket", "state_dir",
]
