"""The errors the client library raises, and the map from an ErrorReply code to its class.

The classes are the ``ClientError`` branch of the one error tree, defined and drawn in
``runtime.core.errors``: ``DaemonUnreachable``, ``ProtocolError``, and ``RemoteError`` with a
subclass per `ErrorCode` (`REMOTE_ERRORS`). All of them are one line; an unknown code, from a
newer daemon, is a plain RemoteError.
"""

from __future__ import annotations

from collections.abc import Mapping

from runyard.runtime.core.errors import (
    BadRequest,
    ClientError,
    Conflict,
    DaemonUnreachable,
    InternalError,
    NotFound,
    OperationFailed,
    ProtocolError,
    RemoteError,
    TooLarge,
    UnsupportedVersion,
)

from .messages import ErrorCode

__all__ = [
    "REMOTE_ERRORS",
    "BadRequest",
    "ClientError",
    "Conflict",
    "DaemonUnreachable",
    "InternalError",
    "NotFound",
    "OperationFailed",
    "ProtocolError",
    "RemoteError",
    "TooLarge",
    "UnsupportedVersion",
    "remote_error",
]

#: Each code the daemon sends -> the class a client raises for it (a test checks it is total).
REMOTE_ERRORS: Mapping[str, type[RemoteError]] = {
    ErrorCode.BAD_REQUEST: BadRequest,
    ErrorCode.UNSUPPORTED_VERSION: UnsupportedVersion,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.CONFLICT: Conflict,
    ErrorCode.TOO_LARGE: TooLarge,
    ErrorCode.FAILED: OperationFailed,
    ErrorCode.INTERNAL: InternalError,
}


def remote_error(code: str, message: str) -> RemoteError:
    return REMOTE_ERRORS.get(code, RemoteError)(code, message)
