"""The control channel as both clients use it: endpoints, request ids, reading a reply.

    control   Client DEALER --[Request JSON]--> daemon ROUTER --[Reply JSON, same id]--> DEALER

Requests get a fresh ``id``; a reply with another id (left over from a request that timed out) is
discarded. After a timeout the DEALER is closed with LINGER 0 and made anew, so a request queued
for a dead daemon is never delivered to the next one that starts. The sockets themselves belong
to ``sync_client`` and ``async_client``; this module holds what they would otherwise both repeat.
"""

from __future__ import annotations

import itertools
import math
import os
import signal as signal_module
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from runyard.runtime.core.tree import resolve_root

from .endpoints import RELAY_MARK, endpoints_for
from .errors import ClientError, DaemonUnreachable, ProtocolError, TooLarge, remote_error
from .messages import (
    MAX_MESSAGE_BYTES,
    ErrorCode,
    ErrorReply,
    Reply,
    Request,
    Run,
    decode_reply,
    encode,
)

__all__ = [
    "HEARTBEAT_MS",
    "SLOW_ACTION_TIMEOUT",
    "RequestIds",
    "daemon_died",
    "expect",
    "heartbeats_for",
    "interpret",
    "key_refused",
    "loose",
    "no_connection",
    "no_reply",
    "remaining_ms",
    "require_socket_file",
    "resolve_endpoints",
    "signal_name",
]

#: Control-connection heartbeat (``heartbeats_for``); a daemon silent for 3 of them is gone.
HEARTBEAT_MS = 500


def heartbeats_for(endpoint: str) -> bool:
    """Whether a client's DEALER on ``endpoint`` sends heartbeats (``HEARTBEAT_MS``): over tcp,
    where a daemon's host can vanish with the connection left open, and to a ``--host`` relay
    (its socket directory holds ``RELAY_MARK``), through which they run end to end to the
    box's daemon: a box gone quiet is noticed in 1.5 s, not at the relay's LINK_TIMEOUT. To a
    daemon's own ipc socket, none: the kernel closes a dead daemon's end at once (kill -9 too)
    and the monitor says so, and heartbeats there only woke the daemon's zmq I/O thread twice a
    second per connected client, all of an idle daemon's CPU with one client (0.05-0.07 % over
    10 s on this VM, issue 16)."""
    if endpoint.startswith("tcp://"):
        return True
    directory = os.path.dirname(endpoint.removeprefix("ipc://")) if "ipc://" in endpoint else ""
    return bool(directory) and os.path.exists(os.path.join(directory, RELAY_MARK))


#: Stopping waits for the service's stop timeout; a 5 s default would give up too early.
SLOW_ACTION_TIMEOUT = 60.0


class _LooseReply(msgspec.Struct):
    """Just enough of a reply to route it, or to read an error code this client does not know."""

    id: str = ""
    reply: str = ""
    code: str = ""
    message: str = ""


_loose_decoder = msgspec.json.Decoder(_LooseReply)
R = TypeVar("R", bound=Reply)


def loose(data: bytes) -> _LooseReply | None:
    try:
        return _loose_decoder.decode(data)
    except msgspec.DecodeError:
        return None


def interpret(data: bytes, want_id: str, endpoint: str, *, sole: bool = False) -> Reply | None:
    """The reply to ``want_id`` in ``data``; None when ``data`` answers some other request.

    ``sole``: this request is the only one in flight on its socket, so an error without an id
    is its answer (a daemon that could not even read the request's id, e.g. an older daemon
    that does not know a new op) instead of something to wait past.
    """

    def ours(reply_id: str) -> bool:
        return reply_id == want_id or (sole and reply_id == "")

    try:
        reply = decode_reply(data)
    except msgspec.DecodeError as exc:
        found = loose(data)
        if found is None or not ours(found.id):
            return None
        if found.reply == "error":
            raise remote_error(found.code, found.message) from None
        raise ProtocolError(f"cannot decode the reply from {endpoint}: {exc}") from None
    if not ours(reply.id) or (reply.id == "" and not isinstance(reply, ErrorReply)):
        return None
    if isinstance(reply, ErrorReply):
        raise remote_error(reply.code, reply.message)
    return reply


def expect(reply: Reply, kind: type[R]) -> R:
    if not isinstance(reply, kind):
        raise ProtocolError(f"expected a {kind.__name__}, the daemon sent a {type(reply).__name__}")
    return reply


class RequestIds:
    """Request ids: a random prefix per client, then a counter (unique, cheap, readable in logs)."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:12]
        self._count = itertools.count(1)

    def stamp(self, req: Request) -> tuple[Request, bytes]:
        """A fresh id, and the encoded request; a request over the daemon's size limit is
        refused here rather than sent to be dropped."""
        req = msgspec.structs.replace(req, id=f"{self._prefix}-{next(self._count)}")
        data = encode(req)
        if len(data) > MAX_MESSAGE_BYTES:
            raise TooLarge(
                ErrorCode.TOO_LARGE, f"request of {len(data)} bytes is over {MAX_MESSAGE_BYTES}"
            )
        return req, data


def require_socket_file(endpoint: str) -> None:
    """Fail at once when an ipc endpoint has no socket file: nobody listens, no need to wait."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if path and not path.startswith("@") and not os.path.exists(path):
            raise DaemonUnreachable(
                f"no daemon at {endpoint} (no socket file): is the daemon running? (runyard up)"
            )


def no_reply(endpoint: str, waited: float, *, handshake_failed: bool = False) -> DaemonUnreachable:
    if handshake_failed:  # something answers, but the CurveZMQ handshake with it broke
        return DaemonUnreachable(
            f"no reply from {endpoint} within {waited:g}s: the CurveZMQ handshake failed "
            "(is the daemon's public key given to this client the right one?)"
        )
    return DaemonUnreachable(
        f"no reply from {endpoint} within {waited:g}s: is the daemon running? (runyard up)"
    )


def key_refused(endpoint: str) -> DaemonUnreachable:
    return DaemonUnreachable(
        f"the daemon at {endpoint} refused this client's CurveZMQ key "
        "(is its public key in the daemon's curve_authorized_dir?)"
    )


def daemon_died(endpoint: str, req: Request) -> DaemonUnreachable:
    return DaemonUnreachable(
        f"the daemon at {endpoint} went away while {type(req).__struct_config__.tag} waited for its reply "
        "(runyard up starts it again)"
    )


def no_connection(endpoint: str, waited: float) -> DaemonUnreachable:
    return DaemonUnreachable(
        f"could not connect to {endpoint} within {waited:g}s: is the daemon running? (runyard up)"
    )


def resolve_endpoints(
    root: str | os.PathLike[str] | None, endpoint: str | None, events_endpoint: str | None
) -> tuple[Path | None, str, str]:
    if endpoint is not None and events_endpoint is not None:
        return (Path(root).absolute() if root is not None else None), endpoint, events_endpoint
    tree_root = resolve_root(root)
    eps = endpoints_for(tree_root)
    return tree_root, endpoint or eps.control, events_endpoint or eps.events


def signal_name(sig: str | int | signal_module.Signals) -> str:
    if isinstance(sig, signal_module.Signals):
        return sig.name.removeprefix("SIG")
    return str(sig)


def remaining_ms(deadline: float | None) -> int | None:
    if deadline is None:
        return None
    return max(0, math.ceil((deadline - time.monotonic()) * 1000))


def curve_options(
    endpoints: tuple[str, str],
    server_key: str | bytes | Path | None,
    client_keys: str | Path | tuple[bytes, bytes] | None,
) -> dict[int, bytes | int]:
    """zmq socket options for CurveZMQ: tcp:// is Curve only (the daemon's public key and this
    client's key pair); ipc:// needs none. ``runtime.signing.keys`` (and with it ``cryptography``) is
    imported only when keys are in play, so an ipc client or the daemon stays lean."""
    if (
        server_key is None
        and client_keys is None
        and not any(e.startswith("tcp://") for e in endpoints)
    ):
        return {}
    from runyard.runtime.signing.keys import KeyFileError, curve_client_options

    try:
        return curve_client_options(endpoints, server_key, client_keys)
    except KeyFileError as exc:
        raise ClientError(str(exc)) from None


def run_request(
    engine: str,
    inputs: Mapping[str, Any] | None,
    parameters: Mapping[str, Any] | None,
    context: Mapping[str, Any] | None,
    project_id: str,
    from_runs: Sequence[str],
    sign_key: str | Path | None,
    run_timeout: float,
) -> Run:
    """The ``run`` request both clients send; a key path is made absolute for the daemon."""
    return Run(
        engine=engine,
        inputs=dict(inputs or {}),
        parameters=dict(parameters or {}),
        context=dict(context or {}),
        project_id=project_id,
        from_runs=list(from_runs),
        sign_key=str(Path(sign_key).absolute()) if sign_key else None,
        timeout=run_timeout,
    )
