"""``[daemon] tcp``: where the CurveZMQ TCP control and event sockets listen, with which keys
(the ZAP authenticator that names each client is in ``tcp_auth``, imported when TCP is on).

TCP is never plain: ``tcp_listener`` refuses tcp without both curve settings, a bad address,
a secret key others can read, or a malformed authorized certificate, before anything binds.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from runyard.runtime.config.project import DaemonSettings
from runyard.runtime.core.errors import ProjectError

__all__ = ["TcpListener", "tcp_listener"]


class TcpListener(msgspec.Struct, frozen=True):
    """Where and with which keys the CurveZMQ TCP sockets listen (``[daemon] tcp``)."""

    host: str
    port: int
    public_key: bytes
    secret_key: bytes
    authorized_dir: Path
    authorized_keys: int
    #: Z85 public key -> the authorized certificate's file name (the audit trail's ``key``).
    key_names: dict[bytes, str] = msgspec.field(default_factory=dict)

    def _url(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{port}"

    @property
    def control(self) -> str:
        return self._url(self.port)

    @property
    def events(self) -> str:
        return self._url(self.port + 1)


def tcp_listener(settings: DaemonSettings, project_file: Path | None) -> TcpListener | None:
    """Check ``[daemon] tcp`` and its Curve settings and load the keys; None when tcp is off.

    TCP is never plain: tcp without both curve settings is a ProjectError, as is a bad address,
    an unreadable or group/world-readable secret key, or a malformed authorized certificate.
    """
    source = str(project_file) if project_file is not None else "runyard.toml"
    if settings.tcp is None:
        return None
    missing = [
        name
        for name in ("curve_secret_key", "curve_authorized_dir")
        if getattr(settings, name) is None
    ]
    if missing:
        raise ProjectError(
            f"{source}: daemon.tcp: TCP control is CurveZMQ only, never plain: "
            f"set daemon.{' and daemon.'.join(missing)} too"
        )
    address = settings.tcp.strip()
    host, sep, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or "://" in address or not port_text.isdigit():
        raise ProjectError(
            f"{source}: daemon.tcp: expected HOST:PORT (like 127.0.0.1:7070), got {settings.tcp!r}"
        )
    port = int(port_text)
    if not 1 <= port <= 65534:
        raise ProjectError(
            f"{source}: daemon.tcp: port {port} out of range 1-65534 (events use PORT+1)"
        )
    base = project_file.parent if project_file is not None else Path.cwd()

    def path_of(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    # Imported here: it pulls in `cryptography` (~8 MiB RSS), which an ipc-only daemon never needs.
    from runyard.runtime.signing.keys import (
        KeyFileError,
        load_authorized_curve_keys,
        load_curve_secret,
    )

    secret_file = path_of(settings.curve_secret_key or "")
    authorized_dir = path_of(settings.curve_authorized_dir or "")
    try:
        public, secret = load_curve_secret(secret_file, require_private=True)
    except KeyFileError as exc:
        raise ProjectError(f"{source}: daemon.curve_secret_key: {exc}") from None
    try:
        authorized = load_authorized_curve_keys(authorized_dir)
    except KeyFileError as exc:
        raise ProjectError(f"{source}: daemon.curve_authorized_dir: {exc}") from None
    names = {key: path.name for path, key in authorized.items()}
    return TcpListener(host, port, public, secret, authorized_dir, len(authorized), names)
