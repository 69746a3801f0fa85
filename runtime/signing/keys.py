"""Key files: Ed25519 signing keys (signed runs and bundles) and CurveZMQ keys (TCP control).

Ed25519, ``generate_signing_key(prefix)``:

    PREFIX.key   the private key, PKCS#8 PEM, unencrypted, mode 0600
    PREFIX.pub   the public key, SubjectPublicKeyInfo PEM, mode 0644

    fingerprint  sha256 of the 32 raw public key bytes, lower-case hex

CurveZMQ, ``generate_curve_key(prefix)``, in the ZeroMQ certificate format that
``zmq.auth.load_certificate`` reads (and ``zmq.auth.certs.create_certificates`` writes):

    PREFIX.key_secret   public + secret key (Z85), mode 0600: stays on its own machine
    PREFIX.key          public key only (Z85), mode 0644: what the other side is given

A daemon's ``curve_authorized_dir`` holds the ``.key`` files of the clients it lets in.

Every file is written atomically (temp file, fsync, rename; a secret is never visible with a
wider mode than 0600) and an existing file is never replaced unless ``force`` is given. Every
problem is one ``KeyFileError`` line naming the file.
"""

from __future__ import annotations

import datetime
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from zmq.utils import z85

from runyard.runtime.core.atomic import atomic_write_bytes
from runyard.runtime.core.capped import SMALL_FILE, read_capped
from runyard.runtime.core.errors import RunyardError
from runyard.runtime.signing.ed25519 import fingerprint

__all__ = [
    "CurveKeyFiles",
    "KeyFileError",
    "SigningKeyFiles",
    "curve_client_options",
    "generate_curve_key",
    "generate_signing_key",
    "load_authorized_curve_keys",
    "load_curve_public",
    "load_curve_secret",
    "load_public_key",
    "load_signing_key",
]

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


class KeyFileError(RunyardError):
    """A key file cannot be written or read, or is not the kind of key asked for."""


@dataclass(frozen=True)
class SigningKeyFiles:
    private: Path
    public: Path
    #: sha256 of the raw public key bytes, hex.
    fingerprint: str


@dataclass(frozen=True)
class CurveKeyFiles:
    secret: Path
    public: Path
    #: The Z85 public key (40 characters).
    public_key: str


# --- writing -------------------------------------------------------------------------------------


def _targets(prefix: str | os.PathLike[str], suffixes: tuple[str, ...], force: bool) -> list[Path]:
    base = Path(prefix).expanduser()
    if not base.name or base.name in (".", ".."):
        raise KeyFileError(f"{prefix}: not a file name prefix")
    paths = [base.with_name(base.name + s) for s in suffixes]
    if not force:
        for path in paths:
            if os.path.lexists(path):
                raise KeyFileError(f"{path}: already exists (use --force to replace it)")
    for path in paths:
        if path.is_dir():
            raise KeyFileError(f"{path}: is a directory")
    try:
        base.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"{base.parent}: cannot create: {exc.strerror or exc}") from None
    return paths


def _write(path: Path, data: bytes, mode: int) -> None:
    try:
        atomic_write_bytes(path, data, mode)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write: {exc.strerror or exc}") from None


def generate_signing_key(prefix: str | os.PathLike[str], force: bool = False) -> SigningKeyFiles:
    """A new Ed25519 key pair in ``PREFIX.key`` (0600) and ``PREFIX.pub`` (0644)."""
    private_path, public_path = _targets(prefix, (".key", ".pub"), force)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write(private_path, private_pem, SECRET_MODE)
    _write(public_path, public_pem, PUBLIC_MODE)
    return SigningKeyFiles(private_path, public_path, fingerprint(key.public_key()))


_CERT_BANNER = """\
#   ****  Generated on {now} by runyard keys gen --curve  ****
#   ZeroMQ CURVE {what} Certificate
#   {advice}

"""


def _certificate(public: bytes, secret: bytes | None) -> bytes:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if secret is None:
        text = _CERT_BANNER.format(
            now=now, what="Public", advice="Give this file to the other side of the connection."
        )
    else:
        text = _CERT_BANNER.format(
            now=now, what="**Secret**", advice="DO NOT PROVIDE THIS FILE TO OTHER USERS."
        )
    text += "metadata\ncurve\n"
    text += f'    public-key = "{public.decode("ascii")}"\n'
    if secret is not None:
        text += f'    secret-key = "{secret.decode("ascii")}"\n'
    return text.encode("ascii")


def generate_curve_key(prefix: str | os.PathLike[str], force: bool = False) -> CurveKeyFiles:
    """A new CurveZMQ key pair in ``PREFIX.key_secret`` (0600) and ``PREFIX.key`` (0644)."""
    secret_path, public_path = _targets(prefix, (".key_secret", ".key"), force)
    public, secret = zmq.curve_keypair()
    _write(secret_path, _certificate(public, secret), SECRET_MODE)
    _write(public_path, _certificate(public, None), PUBLIC_MODE)
    return CurveKeyFiles(secret_path, public_path, public.decode("ascii"))


# --- reading -------------------------------------------------------------------------------------


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        return read_capped(path, SMALL_FILE)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror or exc}") from None


def load_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The Ed25519 private key of a PKCS#8 PEM file (``PREFIX.key``)."""
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except TypeError:
        raise KeyFileError(f"{path}: the private key is encrypted") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path}: not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """The Ed25519 public key of a SubjectPublicKeyInfo PEM file (``PREFIX.pub``)."""
    try:
        key = serialization.load_pem_public_key(_read(path))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path}: not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


_CERT_LINE = re.compile(rb'^\s*(public|secret)-key\s*=\s*["\']?([^"\'\s]*)["\']?\s*$')


def _z85_key(value: bytes | str) -> bytes | None:
    """``value`` as a 40-byte Z85 key, or None when it is not one."""
    raw = value.encode("ascii", "replace") if isinstance(value, str) else value
    if len(raw) != 40:
        return None
    try:
        return raw if len(z85.decode(raw)) == 32 else None
    except (ValueError, KeyError, TypeError):
        return None


def _load_certificate(path: str | os.PathLike[str]) -> tuple[bytes, bytes | None]:
    """(public, secret or None) of a ZeroMQ certificate, read as zmq.auth.load_certificate does."""
    found: dict[bytes, bytes] = {}
    for line in _read(path).splitlines():
        match = _CERT_LINE.match(line)
        if match and match.group(1) not in found:
            found[match.group(1)] = match.group(2)
    if b"public" not in found:
        raise KeyFileError(f"{path}: no public-key in this CurveZMQ certificate")
    public = _z85_key(found[b"public"])
    if public is None:
        raise KeyFileError(f"{path}: public-key is not a 40-character Z85 key")
    secret = None
    if b"secret" in found:
        secret = _z85_key(found[b"secret"])
        if secret is None:
            raise KeyFileError(f"{path}: secret-key is not a 40-character Z85 key")
        if zmq.curve_public(secret) != public:
            raise KeyFileError(f"{path}: public-key does not belong to secret-key")
    return public, secret


def load_curve_secret(
    path: str | os.PathLike[str], *, require_private: bool = False
) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys of a ``.key_secret`` certificate.

    ``require_private`` refuses a file that group or others may read (as ssh does).
    """
    public, secret = _load_certificate(path)
    if secret is None:
        raise KeyFileError(f"{path}: no secret-key (give the .key_secret file, not the .key)")
    if require_private:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            raise KeyFileError(f"{path}: mode {mode:o} lets others read the secret key; chmod 600")
    return public, secret


def load_curve_public(key_or_path: str | bytes | os.PathLike[str]) -> bytes:
    """A Z85 public key given as itself (40 characters) or as a certificate file holding it."""
    if isinstance(key_or_path, str | bytes):
        key = _z85_key(key_or_path)
        if key is not None and not os.path.exists(key_or_path):
            return key
        if isinstance(key_or_path, bytes):
            key_or_path = os.fsdecode(key_or_path)
    return _load_certificate(key_or_path)[0]


def load_authorized_curve_keys(directory: str | os.PathLike[str]) -> dict[Path, bytes]:
    """The public key of every ``*.key`` certificate in ``directory`` (what zmq.auth loads)."""
    d = Path(directory)
    if not d.is_dir():
        raise KeyFileError(f"{d}: no such directory")
    return {p: _load_certificate(p)[0] for p in sorted(d.glob("*.key")) if p.is_file()}


# --- clients -------------------------------------------------------------------------------------


def curve_client_options(
    endpoints: tuple[str, ...],
    server_key: str | bytes | os.PathLike[str] | None,
    client_keys: str | os.PathLike[str] | tuple[bytes, bytes] | None,
) -> dict[int, bytes]:
    """The socket options that make a client's sockets CurveZMQ clients of a daemon.

    ``server_key`` is the daemon's Z85 public key or a certificate file holding it;
    ``client_keys`` is the client's ``.key_secret`` file or a (public, secret) Z85 pair.
    A ``tcp://`` endpoint needs both (TCP is never plain); ipc endpoints take neither.
    """
    tcp = [e for e in endpoints if e.startswith("tcp://")]
    if not tcp:
        if server_key is not None or client_keys is not None:
            raise KeyFileError(
                f"CurveZMQ keys are for tcp:// endpoints, not {', '.join(endpoints)}"
            )
        return {}
    if len(tcp) != len(endpoints):
        raise KeyFileError(
            f"tcp and non-tcp endpoints mixed ({', '.join(endpoints)}): "
            "give both endpoint and events_endpoint as tcp://"
        )
    if server_key is None or client_keys is None:
        missing = " and ".join(
            name
            for name, value in (
                ("curve_server_key", server_key),
                ("curve_client_keys", client_keys),
            )
            if value is None
        )
        raise KeyFileError(f"tcp endpoints need CurveZMQ keys: {tcp[0]} without {missing}")
    if isinstance(client_keys, tuple):
        public, secret = (_z85_key(k) for k in client_keys)
        if public is None or secret is None or zmq.curve_public(secret) != public:
            raise KeyFileError("curve_client_keys: not a matching (public, secret) Z85 pair")
    else:
        public, secret = load_curve_secret(client_keys)
    return {
        zmq.CURVE_SERVERKEY: load_curve_public(server_key),
        zmq.CURVE_PUBLICKEY: public,
        zmq.CURVE_SECRETKEY: secret,
    }
