"""The exceptions: one class per error code of the daemon's API, and a few of the client's.

Every one is a :class:`BurrowError` with the API's ``code`` (a stable string), the HTTP
``status`` (``None`` when the client raised it without an answer) and a ``message`` for
people. ``join_refused`` answers map to a subclass of :class:`JoinRefused` by their
``reason``.
"""

from __future__ import annotations

import json
from typing import Any


class BurrowError(Exception):
    """Something burrow's daemon refused, or the client could not do."""

    #: The code this class stands for (an instance carries the code it was raised with).
    default_code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message: str = message
        self.code: str = code or self.default_code
        self.status: int | None = status
        #: The answer's whole ``error`` object (with ``reason`` for a refused join).
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return f"{self.message} ({self.code})" if self.status is None else (
            f"{self.message} ({self.code}, HTTP {self.status})"
        )


class DaemonNotRunning(BurrowError):
    """No daemon answers at the socket (missing, or refused): run ``burrow up``."""

    default_code = "daemon_not_running"


class SpawnFailed(BurrowError):
    """``Mesh(spawn=True)`` started ``burrow up`` but it exited or did not answer in time."""

    default_code = "spawn_failed"


class ProtocolError(BurrowError):
    """The daemon's answer broke HTTP or WebSocket (or a limit, such as a message's size)."""

    default_code = "protocol_error"


class ConnectionClosed(BurrowError):
    """A WebSocket closed: ``close_code`` and ``reason`` are what the server sent."""

    default_code = "connection_closed"

    def __init__(self, message: str, close_code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.close_code: int | None = close_code
        self.reason: str = reason


class StreamFailed(ConnectionClosed):
    """A stream to a member failed (the server closed it with a code other than 1000)."""

    default_code = "stream_failed"


class BadRequest(BurrowError):
    """400: the body is not the JSON the route takes."""

    default_code = "bad_request"


class Unauthorized(BurrowError):
    """401 (TCP): no bearer token, or another one."""

    default_code = "unauthorized"


class Forbidden(BurrowError):
    """403: the caller may not use the API (see the subclasses)."""

    default_code = "forbidden"


class ForbiddenOrigin(Forbidden):
    """403: the request had an ``Origin``, ``Referer`` or ``Sec-Fetch-Site`` header."""

    default_code = "forbidden_origin"


class ForbiddenHost(Forbidden):
    """403 (TCP): the ``Host`` was not ``127.0.0.1:PORT`` or ``localhost:PORT``."""

    default_code = "forbidden_host"


class ForbiddenUser(Forbidden):
    """403 (Unix socket): the caller runs as another user than the daemon, and not as root."""

    default_code = "forbidden_user"


class NotAdmin(Forbidden):
    """403: only a mesh admin may do this."""

    default_code = "not_admin"


class NotFound(BurrowError):
    """404: no such route (a daemon older than this package, for a new route)."""

    default_code = "not_found"


class UnknownPeer(NotFound):
    """404: the node is not one the daemon is connected to."""

    default_code = "unknown_peer"


class UnknownMember(NotFound):
    """404: no member by that name or node id."""

    default_code = "unknown_member"


#: Another name for :class:`UnknownMember`.
NotAMember = UnknownMember


class NotExposed(NotFound):
    """404: the member does not expose that port."""

    default_code = "not_exposed"


class UnknownForward(NotFound):
    """404: no forward listens at that address."""

    default_code = "unknown_forward"


class MethodNotAllowed(BurrowError):
    """405: the route exists with another method."""

    default_code = "method_not_allowed"


class RequestTimeout(BurrowError):
    """408: the request's body did not arrive in time."""

    default_code = "request_timeout"


class AlreadyMember(BurrowError):
    """409: the node is in a mesh already (or joining one)."""

    default_code = "already_member"


class MemberOffline(BurrowError):
    """409: the member is not connected now."""

    default_code = "member_offline"


class ForwardFailed(BurrowError):
    """409: a forward could not listen where asked (the address is in use, say)."""

    default_code = "forward_failed"


class PayloadTooLarge(BurrowError):
    """413: the request's body is too long (or a datagram over the connection's size)."""

    default_code = "payload_too_large"


class InternalError(BurrowError):
    """500: the daemon failed."""

    default_code = "internal"


class JoinFailed(BurrowError):
    """502: the inviter could not be reached."""

    default_code = "join_failed"


class StreamRefused(BurrowError):
    """502: the member refused the stream, or no program there accepted it in time."""

    default_code = "stream_refused"


class PeerTimeout(BurrowError):
    """504: the peer did not answer in time."""

    default_code = "peer_timeout"


class JoinRefused(Forbidden):
    """403: the join was refused; ``reason`` says why (the subclasses, one per reason)."""

    default_code = "join_refused"
    #: The ``reason`` this class stands for.
    default_reason: str = "refused"

    @property
    def reason(self) -> str:
        """Why: ``expired``, ``used``, ``revoked``, ``invalid``, ``wrong_password``,
        ``code_dead``, ``name_taken`` or ``refused``."""
        return str(self.details.get("reason", self.default_reason))


class InviteExpired(JoinRefused):
    """The invite expired."""

    default_reason = "expired"


class InviteUsed(JoinRefused):
    """The invite was used as many times as it may be."""

    default_reason = "used"


class InviteRevoked(JoinRefused):
    """The invite was revoked."""

    default_reason = "revoked"


class InviteInvalid(JoinRefused):
    """The invite is not one: malformed, changed or not signed for its mesh."""

    default_reason = "invalid"


class WrongPassword(JoinRefused):
    """The short code's password part was wrong."""

    default_reason = "wrong_password"


class CodeDead(JoinRefused):
    """The short code is burnt (too many wrong guesses) or gone."""

    default_reason = "code_dead"


class NameTaken(JoinRefused):
    """Another member has the name asked for."""

    default_reason = "name_taken"


_BY_CODE: dict[str, type[BurrowError]] = {
    c.default_code: c
    for c in (
        BadRequest, Unauthorized, ForbiddenOrigin, ForbiddenHost, ForbiddenUser, NotAdmin,
        NotFound, UnknownPeer, UnknownMember, NotExposed, UnknownForward, MethodNotAllowed,
        RequestTimeout, AlreadyMember, MemberOffline, ForwardFailed, PayloadTooLarge,
        InternalError, JoinFailed, StreamRefused, PeerTimeout, JoinRefused,
    )
}
_BY_REASON: dict[str, type[JoinRefused]] = {
    c.default_reason: c
    for c in (
        InviteExpired, InviteUsed, InviteRevoked, InviteInvalid, WrongPassword, CodeDead,
        NameTaken, JoinRefused,
    )
}


def error_from_body(status: int, body: bytes) -> BurrowError:
    """The exception for an error answer: by its ``code`` (and a refused join's ``reason``);
    a body that is not the API's error JSON gives a plain :class:`BurrowError`."""
    try:
        detail = json.loads(body)["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        text = body[:200].decode("utf-8", "replace")
        return BurrowError(f"HTTP {status}: {text}", code="http_error", status=status)
    cls = _BY_CODE.get(code, BurrowError)
    if cls is JoinRefused:
        cls = _BY_REASON.get(str(detail.get("reason", "refused")), JoinRefused)
    return cls(message, code=code, status=status, details=detail)
