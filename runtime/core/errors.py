"""Every exception Runyard raises, in one tree.

    RunyardError                    anything Runyard refuses or cannot do; str() is one line
    ├── ManifestError               manifest.json (or another file we own) is malformed
    ├── ProjectError                runyard.toml / env.toml / user config is malformed
    ├── TreeError                   the runtime tree is missing, or a path escapes it
    ├── LockBusy                    another process holds a lock (tried once, or waited its timeout)
    ├── FileRefused                 a file to parse is too big, not a regular file, or a link not followed
    ├── NoSpaceError                the disk cannot hold what must be written (checked or ENOSPC)
    ├── CatalogError                a catalog cannot be read or is malformed
    │   └── CatalogUnreachable      fetching it failed (host down, HTTP error, no such file)
    ├── ResolveError                no archive matches a name / version spec / platform
    ├── AcquisitionError            fetching an archive failed
    │   └── ChecksumMismatch        the bytes we got are not the bytes the catalog promised
    ├── UnsafeArchiveError          an archive tries to write outside its directory, or worse
    ├── InUse                       an installed version a running service uses is not removed
    ├── SupervisionError            a supervision setting types cannot refuse (also a ValueError)
    ├── KeyFileError                a key file cannot be written or read, or is the wrong kind
    ├── AuditUnwritten              an action was done, but its audit entry could not be appended
    ├── LicenseError                a license cannot be signed, or an issuer key cannot be read
    ├── LicenseNotHonoured          a license check step refuses it (never leaves license.py)
    ├── StartupCheckFailed          a fatal doctor check: the daemon does not start
    ├── JSONInputError              bytes that are not one strict JSON document (also a ValueError)
    ├── FastPathRefused             the JCS fast path cannot take a value (never leaves canonical.py)
    ├── RunError                    a run cannot be attempted (setup, not a verdict on the work)
    │   ├── RunRejected             a run refused at a stage; ``reason`` and ``record`` say why
    │   └── ArtifactIndexError      a sealed run's ARTIFACT_INDEX.json cannot be read
    ├── SealedFileError             a file of a run directory that cannot be sealed (also a ValueError)
    ├── AttestationError            a DSSE envelope / in-toto Statement that cannot be read (also a ValueError)
    ├── BundleError                 a runtime bundle cannot be packed, verified, installed, rolled back
    │   └── SecretsFound            packing refused: secret-looking files or values
    ├── WheelhouseError             the wheels of a runtime bundle cannot be collected
    ├── ConfigError                 the services cannot be run as configured (cycle, bad probe, ...)
    ├── SpawnError                  a service's process could not be started
    ├── UnknownService              the daemon runs no service of that name (answered not_found)
    ├── OverLimit                   a start beyond the license's max_services
    ├── ShuttingDown                an operation after shutdown was asked for (answered conflict)
    ├── HandlerError                a handler's expected failure, answered as ErrorReply(code)
    ├── DaemonRunning               another daemon already owns the tree
    ├── SocketDirError              the socket directory is not private to us (also an OSError)
    ├── UsageError                  bad CLI arguments that argparse cannot see
    ├── StartFailed                 ``runyard up`` could not bring the daemon up
    ├── SystemdError                systemd is not the init system, or systemctl refused a unit
    ├── ClientError                 anything the client library refuses or cannot do
    │   ├── DaemonUnreachable       no socket file, or no reply before the deadline
    │   ├── ProtocolError           the daemon answered something this client cannot read
    │   └── RemoteError             an ErrorReply; ``code`` and ``message`` as the daemon sent them
    │       ├── BadRequest          bad_request
    │       ├── UnsupportedVersion  unsupported_version
    │       ├── NotFound            not_found
    │       ├── Conflict            conflict
    │       ├── TooLarge            too_large
    │       ├── OperationFailed     failed
    │       └── InternalError       internal
    └── InvariantBroken             Runyard broke its own rule: a bug, answered as internal
        └── IllegalTransition       a trigger the state table does not allow (also a RuntimeError)

Every message names what is wrong, on one line: the CLI prints it, the daemon answers it as
``failed``; a bug (`InvariantBroken`) is logged with its traceback, shown as internal. A second,
standard base (ValueError, OSError, RuntimeError) is kept where callers catch that type. It
imports nothing of Runyard (no cycle; the server checks a `HandlerError` code against ErrorCode).
"""

from __future__ import annotations

from typing import Protocol

__all__ = [
    "SHOWN_FINDINGS",
    "AcquisitionError",
    "ArtifactIndexError",
    "AttestationError",
    "AuditUnwritten",
    "BadRequest",
    "BundleError",
    "CatalogError",
    "CatalogUnreachable",
    "ChecksumMismatch",
    "ClientError",
    "ConfigError",
    "Conflict",
    "DaemonRunning",
    "DaemonUnreachable",
    "FastPathRefused",
    "FileRefused",
    "HandlerError",
    "IllegalTransition",
    "InUse",
    "InternalError",
    "InvariantBroken",
    "JSONInputError",
    "KeyFileError",
    "LicenseError",
    "LicenseNotHonoured",
    "LockBusy",
    "ManifestError",
    "NoSpaceError",
    "NotFound",
    "OperationFailed",
    "OverLimit",
    "ProjectError",
    "ProtocolError",
    "RemoteError",
    "ResolveError",
    "RunError",
    "RunRejected",
    "RunyardError",
    "SealedFileError",
    "SecretsFound",
    "ShuttingDown",
    "SocketDirError",
    "SpawnError",
    "StartFailed",
    "StartupCheckFailed",
    "SupervisionError",
    "SystemdError",
    "TooLarge",
    "TreeError",
    "UnknownService",
    "UnsafeArchiveError",
    "UnsupportedVersion",
    "UsageError",
    "WheelhouseError",
]


class RunyardError(Exception):
    """Base of every error Runyard raises."""


# --- the runtime tree and the files we own ------------------------------------------------------


class ManifestError(RunyardError):
    """A manifest (or another file we own) does not match its schema."""


class ProjectError(RunyardError):
    """A project file or an env/config override file is malformed."""


class TreeError(RunyardError):
    """The runtime tree is missing or a path would leave it."""


class LockBusy(RunyardError):
    """Another process holds the lock (tried once, or waited ``timeout`` seconds)."""

    def __init__(self, path: object, holder: str | None, waited: float | None) -> None:
        self.path = path
        #: The pid the holder wrote into the lock file (``record_holder``), when it did.
        self.holder = holder
        by = f" by pid {holder}" if holder else ""
        after = f" after waiting {waited:g}s" if waited else ""
        super().__init__(f"{path}: locked{by}{after}")


class FileRefused(RunyardError):
    """A file we were to parse is refused before a byte is read (size cap, type, symlink)."""


class NoSpaceError(RunyardError):
    """No space left on device for a download, an extraction or a record; nothing half written."""


# --- acquisition ---------------------------------------------------------------------------------


class CatalogError(RunyardError):
    """A catalog is unreachable or malformed."""


class CatalogUnreachable(CatalogError):
    """The catalog could not be fetched (a saved copy may stand in for it)."""


class ResolveError(RunyardError):
    """No archive in the catalog matches what was asked for."""


class AcquisitionError(RunyardError):
    """An archive could not be fetched into the cache."""


class ChecksumMismatch(AcquisitionError):
    """The fetched bytes differ from the catalog's sha256 or size."""


class UnsafeArchiveError(RunyardError):
    """An archive member would escape the target or carries a dangerous type or mode."""


class InUse(RunyardError):
    """``runtime remove`` of a version a running service was started from."""


# --- project settings, keys, license, doctor -----------------------------------------------------


class SupervisionError(RunyardError, ValueError):
    """A setting that types alone cannot refuse (a signal name that is not a signal, ...)."""


class KeyFileError(RunyardError):
    """A key file cannot be written or read, or is not the kind of key asked for."""


class AuditUnwritten(RunyardError):
    """A ``strict`` block's action was done, but its entry could not be appended."""


class LicenseNotHonoured(RunyardError):
    """A step of ``check_license`` found the license unusable; ``status`` is how the tree runs
    instead (community, with the reason). A signal inside ``runtime.ops.license``."""

    def __init__(self, reason: str, status: object) -> None:
        super().__init__(reason)
        self.status = status


class LicenseError(RunyardError):
    """A license cannot be signed, or an issuer key cannot be read."""


class StartupCheckFailed(RunyardError):
    """A fatal startup check failed: the daemon does not start."""


# --- JSON we read, canonical JSON we write -------------------------------------------------------


class JSONInputError(RunyardError, ValueError):
    """Bytes that are not one strict JSON document; the message is one line."""


class FastPathRefused(RunyardError):
    """The fast path cannot take this value; the slow path will convert it or say why not.

    A signal inside ``runtime.core.canonical``: it never reaches a caller."""


# --- sealed runs ---------------------------------------------------------------------------------


class RunError(RunyardError):
    """A run cannot be attempted (a setup problem, not a verdict on the engine's work)."""


class RunRejected(RunError):
    """The run was refused; ``reason`` says why, ``record`` is where the diagnosis was kept."""

    def __init__(
        self,
        reason: str,
        *,
        run_id: str = "",
        engine: str = "",
        stage: str = "",
        record: str | None = None,
    ) -> None:
        self.reason = reason
        self.run_id = run_id
        self.engine = engine
        self.stage = stage
        self.record = record
        super().__init__(self._text())

    def _text(self) -> str:
        head = f"run {self.run_id} of {self.engine} rejected" if self.run_id else "run rejected"
        tail = f" (record: {self.record})" if self.record else ""
        return f"{head}: {self.reason}{tail}"

    def with_record(self, run_id: str, engine: str, record: str | None) -> RunRejected:
        self.run_id, self.engine, self.record = run_id, engine, record
        self.args = (self._text(),)
        return self


class ArtifactIndexError(RunError):
    """ARTIFACT_INDEX.json cannot be read or has no files array; the message names the file."""


class SealedFileError(RunyardError, ValueError):
    """A file of a run directory that cannot be sealed (a symlink, a device, a bad name...)."""


class AttestationError(RunyardError, ValueError):
    """An attestation file that is not one DSSE envelope holding an in-toto Statement v1."""


# --- runtime bundles -----------------------------------------------------------------------------


class BundleError(RunyardError):
    """A runtime bundle cannot be packed, verified, installed or rolled back; str() is one line."""


#: How many findings the one-line error names; `--json` (and ``.findings``) has them all.
SHOWN_FINDINGS = 10


class _Finding(Protocol):
    """What SecretsFound needs of a ``runtime.bundle.layout.Finding``: a path and a str()."""

    path: str


class SecretsFound(BundleError):
    """Files or values that look like secrets: packing refused before anything is written."""

    def __init__(self, findings: list[_Finding]) -> None:
        self.findings = findings
        paths = sorted({f.path for f in findings})
        listed = "; ".join(str(f) for f in findings[:SHOWN_FINDINGS])
        if len(findings) > SHOWN_FINDINGS:
            listed += f"; and {len(findings) - SHOWN_FINDINGS} more (--json lists every one)"
        super().__init__(
            f"refusing to pack {len(findings)} secret-looking item(s) in {len(paths)} path(s) "
            f"(values not shown; pass --allow PATH for each path that holds no secret): {listed}"
        )


class WheelhouseError(RunyardError):
    """The wheels of a runtime bundle cannot be collected; str() says what is missing, on one line."""


# --- the daemon ----------------------------------------------------------------------------------


class ConfigError(RunyardError):
    """The services cannot be run as configured (a cycle, an unknown dependency, a bad probe)."""


class SpawnError(RunyardError):
    """A service could not be started: missing program, not executable, bad working directory."""


class UnknownService(RunyardError):
    """A service name the daemon does not run (answered as ``not_found``)."""


class OverLimit(RunyardError):
    """A start asks for a service beyond the license's max_services."""


class ShuttingDown(RunyardError):
    """An operation arrived after shutdown was asked for; the daemon is going away.

    Answered as ``conflict``, not as a handler's ``failed``."""


class HandlerError(RunyardError):
    """An expected failure, answered as ErrorReply(code, message).

    ``code`` is a ``protocol.messages.ErrorCode`` (a str); the server answers a code the protocol
    does not define as ``internal``: it is a bug in the handler."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DaemonRunning(RunyardError):
    """Another daemon already owns this tree."""


class SocketDirError(RunyardError, OSError):
    """The socket directory is not private to this user: refuse to use it."""


# --- the command line ----------------------------------------------------------------------------


class UsageError(RunyardError):
    """Bad arguments that argparse cannot see (a size that is not a size, ...)."""


class StartFailed(RunyardError):
    """``up`` could not bring the daemon up; the message has its last words."""


class SystemdError(RunyardError):
    """``service install|uninstall|status``: no systemd to talk to, or systemctl failed."""


# --- the client library --------------------------------------------------------------------------


class ClientError(RunyardError):
    """Base of the errors the client library raises."""


class DaemonUnreachable(ClientError):
    """No daemon listens at the endpoint, or it did not answer before the deadline."""


class ProtocolError(ClientError):
    """The daemon's answer cannot be decoded, or is not the reply the request calls for."""


class RemoteError(ClientError):
    """The daemon refused or failed the request (an ErrorReply).

    ``protocol.errors.REMOTE_ERRORS`` maps each ErrorCode to its subclass below; an unknown
    code, from a newer daemon, is a plain RemoteError."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


class BadRequest(RemoteError):
    """``bad_request``: the request is malformed or names nothing."""


class UnsupportedVersion(RemoteError):
    """``unsupported_version``: the daemon does not speak this client's protocol version."""


class NotFound(RemoteError):
    """``not_found``: no such service or sealed run."""


class Conflict(RemoteError):
    """``conflict``: not now (shutting down, over the license limit, nothing running)."""


class TooLarge(RemoteError):
    """``too_large``: the request or its reply exceeds the message size limit."""


class OperationFailed(RemoteError):
    """``failed``: the daemon tried and could not (bad config, engine not installed, ...)."""


class InternalError(RemoteError):
    """``internal``: a daemon bug; its log has the traceback."""


# --- bugs ----------------------------------------------------------------------------------------


class InvariantBroken(RunyardError):
    """Runyard broke one of its own rules: a bug, logged with its traceback, never a refusal."""


class IllegalTransition(InvariantBroken, RuntimeError):
    """A trigger that the table does not allow in the current state: a supervisor bug."""
