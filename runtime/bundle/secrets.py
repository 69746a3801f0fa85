"""No secrets in a bundle: the rules that find files and values that look like secrets.

Every rule gives a `Finding` (member path and reason, never the value). ``runyard bundle pack``
collects them all and refuses with one error listing every one, before anything is written;
``--allow PATH`` exempts one path (recorded in the manifest as ``bundle.allowed``).

By name, any packed file:
  ``.env``, ``NAME.env``, ``.env.NAME``            an .env file
  ``*.key_secret``                                 a CurveZMQ secret key (runyard keys gen --curve)
  ``*.p12 *.pfx *.jks *.keystore``                 a key store
  ``id_rsa id_dsa id_ecdsa id_ed25519``            an SSH private key (the ``.pub`` is fine)
  ``*.key``                                        a key file, unless its content is plainly
                                                   public: a ZeroMQ certificate with only a
                                                   public-key, or PEM holding only PUBLIC KEY
                                                   or CERTIFICATE blocks

By content, any packed file (binaries included): a PEM private key block (``-----BEGIN ...
PRIVATE KEY-----`` or ``PGP PRIVATE KEY BLOCK`` followed by a base64 body: an OpenSSH key is
one), also as embedded in a config file (lines indented in a YAML block scalar, quoted in a
JSON array, joined by ``\\n`` escapes in a string); a ZeroMQ certificate line ``secret-key =
"<40 chars>"``, a PuTTY private key. Under ``config/`` the marker ``BEGIN ... PRIVATE KEY`` is
enough, with or without a body.

By value, every file under ``config/`` whatever its name (``credentials``, ``app.yaml.tmpl``),
read line by line as UTF-8 (bytes that are not are replaced), ``.toml`` and ``.json`` files
that parse by their parsed values; a file bigger than ``MAX_CONFIG_SCAN`` is a finding of its
own. Also the ``env`` of each service in the manifest. A finding is a key whose *name* says it
holds a secret, with a non-empty string value. The name is split into words (on ``_ - .``,
spaces and camelCase) and looked at by its *last* word, so what a setting holds decides, not
what it is about:

- last word ``secret(s) token password(s) passwd passphrase credential(s) creds pass``, or a
  word ending in ``password passwd secret token apikey privatekey secretkey accesskey``
  (``db_password``, ``API_TOKEN``, ``clientSecret``, ``dbpassword``);
- last word ``key`` or ``keys`` after ``api private secret access signing encryption master
  auth license client session hmac shared service account ssh tls ssl`` (``api_key``,
  ``privateKey``, ``api_keys``), or the name ``key`` alone.

Not secrets: ``keys_dir``, ``token_url``, ``password_file``, ``public_key``, ``key_id``,
``sort_key``, ``max_tokens`` (their last word is not a secret word); empty strings, numbers,
booleans and nulls in TOML and JSON (a schema default such as ``password = ""`` is config
surface; a count is no secret; in line formats every value is text); values that point elsewhere
rather than hold the secret: ``${VAR}``, ``$VAR``, ``{{ template }}``, ``env:...``,
``file:...``, ``vault:...``, and paths (``/...``, ``./...``, ``../...``, ``~/...``). Files in
``bin/`` get the name and content rules only: they are upstream artifacts, checked by sha256
against the catalog.
"""

from __future__ import annotations

import json
import mmap
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any

from .layout import Finding

__all__ = [
    "MAX_CONFIG_SCAN",
    "scan_config_text",
    "scan_content",
    "scan_env",
    "scan_name",
    "secret_name",
]

#: A file under ``config/`` bigger than this is not value-scanned but refused as a finding
#: (``--allow`` packs it): config files are small, and the scan reads the whole file.
MAX_CONFIG_SCAN = 16 * 1024 * 1024

_LAST_WORDS = frozenset(
    {
        "secret",
        "secrets",
        "token",
        "password",
        "passwords",
        "passwd",
        "passphrase",
        "credential",
        "credentials",
        "creds",
        "pass",
    }
)
_GLUED = ("password", "passwd", "secret", "token", "apikey", "privatekey", "secretkey", "accesskey")
_KEY_QUALIFIERS = frozenset(
    {
        "api",
        "private",
        "secret",
        "access",
        "signing",
        "encryption",
        "master",
        "auth",
        "license",
        "licence",
        "client",
        "session",
        "hmac",
        "shared",
        "service",
        "account",
        "ssh",
        "tls",
        "ssl",
    }
)
_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
#: A path is made of path characters only: a random secret that happens to start with `/` (a
#: ZeroMQ Z85 key does, 1 time in 85) is not a path.
_REFERENCE = re.compile(
    r"^(\$\{[^}]+\}|\$[A-Za-z_][A-Za-z0-9_]*|\{\{[^{}]*\}\}|(env|file|vault):\S*"
    r"|~?\.{0,2}/[A-Za-z0-9._~/@:+-]*)$"
)

#: Between a PEM line and the next, as a key looks when embedded in a config file: real line
#: breaks, the indentation of a YAML block scalar, the quotes and commas of a JSON array of lines,
#: the ``\n`` escapes of a JSON or YAML string, the space of a YAML folded scalar.
_PEM_SEP = rb"(?:[ \t\r\n\"',+]|\\+[rnt])+"
_PEM_PRIVATE = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----"
    + _PEM_SEP
    + rb"(?:[A-Za-z0-9-]+: [^\r\n\\\"]*"
    + _PEM_SEP
    + rb")*[A-Za-z0-9+/=]{16}"
)
_PEM_MARKER = re.compile(rb"BEGIN ([A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_ZMQ_SECRET = re.compile(rb"(?m)^\s*secret-key\s*=\s*[\"']?[!-~]{40}[\"']?\s*$")
_ZMQ_PUBLIC = re.compile(rb"(?m)^\s*public-key\s*=\s*[\"']?[!-~]{40}[\"']?\s*$")
_PUTTY = b"PuTTY-User-Key-File-"
_SSH_NAMES = frozenset(
    {"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk"}
)
_STORE_SUFFIXES = (".p12", ".pfx", ".jks", ".keystore")
_LINE_KV = re.compile(r"^\s*(?:export\s+|-\s+)?([A-Za-z0-9_.\-\"']+)\s*[=:]\s*(.*?)\s*$")


# --- names ---------------------------------------------------------------------------------


def _words(name: str) -> list[str]:
    return [w.lower() for w in _SPLIT.split(name) if w]


def secret_name(name: str) -> bool:
    """Whether a setting called ``name`` holds a secret, by the rules of the module doc."""
    words = _words(name)
    if not words:
        return False
    last = words[-1]
    if last in _LAST_WORDS or any(last.endswith(g) for g in _GLUED):
        return True
    if last == "key" and len(words) == 1:
        return True
    if last in ("key", "keys"):
        return len(words) > 1 and words[-2] in _KEY_QUALIFIERS
    return False


def _holds_value(value: Any) -> bool:
    """A non-empty scalar that is not a reference to a secret kept elsewhere."""
    if not isinstance(value, str):
        return False
    text = value.strip().strip("\"'").strip()
    return bool(text) and not _REFERENCE.match(text)


def scan_name(rel: str, head: bytes) -> str | None:
    """The reason the file ``rel`` is a secret by its name, or None. ``head`` is its start
    (enough to tell a public ``.key`` certificate from a secret one)."""
    base = PurePosixPath(rel).name
    lower = base.lower()
    if lower == ".env" or lower.endswith(".env") or lower.startswith(".env."):
        return "an .env file"
    if lower.endswith(".key_secret"):
        return "a CurveZMQ secret key file (.key_secret)"
    if lower.endswith(_STORE_SUFFIXES):
        return "a key store file"
    if lower in _SSH_NAMES:
        return "an SSH private key file"
    if lower.endswith(".key") and not _public_key_file(head):
        return "a .key file that is not plainly a public key"
    return None


def _public_key_file(data: bytes) -> bool:
    if _ZMQ_PUBLIC.search(data) and not _ZMQ_SECRET.search(data):
        return True
    blocks = [m.group(1) for m in _PEM_BLOCK.finditer(data)]
    return bool(blocks) and all(b in (b"PUBLIC KEY", b"CERTIFICATE") for b in blocks)


# --- content -------------------------------------------------------------------------------


def scan_content(data: bytes | mmap.mmap, *, config: bool = False) -> list[str]:
    """Reasons the bytes hold a private key. Fast on big binaries: one ``find`` per marker,
    a regex only where a marker is. With ``config`` (a file under ``config/``) a ``BEGIN ...
    PRIVATE KEY`` marker is enough, body or not: a config file has no reason to hold one."""
    found: list[str] = []
    pos = data.find(b"-----BEGIN ")
    while pos != -1:
        m = _PEM_PRIVATE.match(data[pos : pos + 512])
        if m:
            found.append(f"holds a PEM private key ({m.group(1).decode()})")
            break
        pos = data.find(b"-----BEGIN ", pos + 11)
    if config and not found:
        pos = data.find(b"BEGIN ")
        while pos != -1:
            m = _PEM_MARKER.match(data[pos : pos + 64])
            if m:
                found.append(f"holds a PEM private key marker ({m.group(1).decode()})")
                break
            pos = data.find(b"BEGIN ", pos + 6)
    pos = data.find(b"secret-key")
    while pos != -1:
        start = data.rfind(b"\n", max(0, pos - 80), pos) + 1 if pos else 0
        if _ZMQ_SECRET.match(data[start : pos + 80]):
            found.append("holds a CurveZMQ secret-key")
            break
        pos = data.find(b"secret-key", pos + 10)
    if data.find(_PUTTY) != -1:
        found.append("holds a PuTTY private key")
    return found


# --- values --------------------------------------------------------------------------------


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(dotted key path, scalar) for every value under a key, lists flattened."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v, path)
    else:
        yield path, value


def _secret_keys(doc: Any) -> list[str]:
    found: list[str] = []
    for path, value in _walk(doc, ""):
        name = path.rsplit(".", 1)[-1]
        if path and secret_name(name) and _holds_value(value) and path not in found:
            found.append(path)
    return found


def _line_keys(text: str) -> list[str]:
    """``key = value`` / ``key: value`` lines (ini, properties, YAML at any depth, shell,
    templates, JSON-like lines)."""
    found: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#;[":
            continue
        m = _LINE_KV.match(line)
        if not m:
            continue
        key = m.group(1).strip("\"'")
        value = re.split(r"\s+[#;]", m.group(2), maxsplit=1)[0].rstrip().removesuffix(",")
        if secret_name(key) and _holds_value(value) and key not in found:
            found.append(key)
    return found


def scan_config_text(rel: str, data: bytes) -> list[str]:
    """Reasons a file under ``config/`` holds secret values (the keys, never the values).

    Every file is read line by line, whatever its name (a ``credentials`` file, an
    ``app.yaml.tmpl``); bytes that are not UTF-8 are replaced, so a binary is looked at too.
    ``.toml`` and ``.json`` files that parse are judged by their parsed values instead."""
    suffix = PurePosixPath(rel).suffix.lower()
    text = data.decode("utf-8", errors="replace")
    keys: list[str]
    try:
        if suffix == ".toml":
            keys = _secret_keys(tomllib.loads(text))
        elif suffix == ".json":
            keys = _secret_keys(json.loads(text))
        else:
            keys = _line_keys(text)
    except (ValueError, RecursionError):  # TOMLDecodeError and JSONDecodeError both are
        keys = _line_keys(text)
    return [f"{key} holds a value under a secret-looking name" for key in keys]


def scan_env(label: str, env: Mapping[str, str]) -> list[Finding]:
    """The manifest ``env`` of a service: same name rules as config values."""
    return [
        Finding("manifest.json", f"{label}.env.{name} holds a value under a secret-looking name")
        for name, value in sorted(env.items())
        if secret_name(name) and _holds_value(value)
    ]
