"""The errors the client library raises, and the map from an ErrorReply code to its class.

All of them are one line:

    RunyardError
    └── ClientError                 anything this library refuses or cannot do
        ├── DaemonUnreachable       no socket file, or no reply before the deadline
        ├── ProtocolError           the daemon answered something this client cannot read
        └── RemoteError             an ErrorReply; ``code`` and ``message`` as the daemon sent them
            ├── BadRequest          bad_request
            ├── UnsupportedVersion  unsupported_version
            ├── NotFound            not_found
            ├── Conflict            conflict
            ├── TooLarge            too_large
            ├── OperationFailed     failed
            └── InternalError       internal
    (an unknown code, from a newer daemon, is a plain RemoteError)
"""

from __future__ import annotations

from collections.abc import Mapping

from runyard.runtime.core.errors import RunyardError

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


class ClientError(RunyardError):
    """Base of the errors the client library raises."""


class DaemonUnreachable(ClientError):
    """No daemon listens at the endpoint, or it did not answer before the deadline."""


class ProtocolError(ClientError):
    """The daemon's answer cannot be decoded, or is not the reply the request calls for."""


class RemoteError(ClientError):
    """The daemon refused or failed the request (an ErrorReply)."""

    #: The ErrorReply code this class stands for ("" on the base class).
    CODE = ""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


class BadRequest(RemoteError):
    CODE = "bad_request"


class UnsupportedVersion(RemoteError):
    CODE = "unsupported_version"


class NotFound(RemoteError):
    CODE = "not_found"


class Conflict(RemoteError):
    CODE = "conflict"


class TooLarge(RemoteError):
    CODE = "too_large"


class OperationFailed(RemoteError):
    CODE = "failed"


class InternalError(RemoteError):
    CODE = "internal"


REMOTE_ERRORS: Mapping[str, type[RemoteError]] = {
    cls.CODE: cls
    for cls in (
        BadRequest,
        UnsupportedVersion,
        NotFound,
        Conflict,
        TooLarge,
        OperationFailed,
        InternalError,
    )
}


def remote_error(code: str, message: str) -> RemoteError:
    return REMOTE_ERRORS.get(code, RemoteError)(code, message)
