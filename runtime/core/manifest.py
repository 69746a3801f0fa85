"""runtime/manifest.json: what is installed in the tree, as msgspec Structs.

The file is ours, so unknown fields are refused. Field names on disk are camelCase
(`binPath`, `defaultPorts`, `createdAt`), as in the runtime-tree spec. Decoding checks types;
`validate_manifest` then checks meaning (hex digests, names, paths that stay in the tree) and
every problem is reported as one line naming the field path: `services[2].checksum: ...`.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

from runyard.runtime.core.atomic import atomic_write_bytes
from runyard.runtime.core.capped import MANIFEST_FILE, read_capped
from runyard.runtime.core.errors import ManifestError, TreeError
from runyard.runtime.core.platform import ARCHES, OSES
from runyard.runtime.core.tree import RESERVED_NAMES, TOP_DIRS, RuntimeTree, check_name

__all__ = [
    "MAX_INT",
    "SEMVER_RE",
    "BundleInfo",
    "PortDef",
    "RuntimeManifest",
    "ServiceEntry",
    "decode_error_message",
    "init_tree",
    "load_manifest",
    "parse_manifest",
    "save_manifest",
    "unsafe_relative_path",
    "validate_manifest",
]

HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: A semantic version, exactly as semver.org 2.0.0 writes it (no leading "v").
SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?\Z"  # \Z: "$" also matches before a "\n"
)
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
#: The largest integer a manifest may hold: RFC 8785 (the signed bytes) writes integers as
#: IEEE doubles, exact only up to 2**53 - 1. 8 PiB is more than any byte count here.
MAX_INT = 2**53 - 1


class PortDef(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """A port a service listens on by default."""

    name: str
    port: int
    protocol: Literal["tcp", "udp", "http", "https"] = "tcp"


class ServiceEntry(msgspec.Struct, forbid_unknown_fields=True, rename="camel", omit_defaults=True):
    """One installed (name, version, os, arch) of a service or engine."""

    name: str
    version: str
    os: str
    arch: str
    checksum: str
    size: int
    bin_path: str
    default_ports: list[PortDef] = []
    env: dict[str, str] = {}
    args: list[str] = []
    kind: Literal["service", "engine"] = "service"
    #: When this version was (last) ensured, RFC 3339 UTC; the newest one runs by default.
    installed_at: str = ""
    #: sha256 of every extracted file, by path relative to the install dir.
    files: dict[str, str] = {}

    @property
    def platform(self) -> str:
        return f"{self.os}-{self.arch}"

    @property
    def install_rel(self) -> str:
        """The install dir, relative to the tree root."""
        return f"bin/{self.name}/{self.version}/{self.os}-{self.arch}"


class BundleInfo(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """Where this tree came from, when packed as a runtime bundle (docs/BUNDLES.md).

    The first three are always written (empty in a tree that was never packed). The others
    exist only in a bundle's manifest, where the signature covers them all: together they
    describe every member of the bundle, so the signed manifest covers every byte.
    """

    created_at: str = ""
    source: str = ""
    #: base64 Ed25519 signature of the RFC 8785 bytes of this manifest without this field.
    signature: str = ""
    #: The bundle's semantic version (it installs into ``versions/<version>/``).
    version: str | UnsetType = UNSET
    #: sha256 of every regular-file member but manifest.json, by member path.
    files: dict[str, str] | UnsetType = UNSET
    #: The size in bytes of every member of ``files`` (install refuses a member whose archive
    #: header says otherwise before writing a byte, and checks free space first).
    sizes: dict[str, int] | UnsetType = UNSET
    #: The members of ``files`` with mode 0755; every other file is 0644.
    executables: list[str] | UnsetType = UNSET
    #: Symlink members: member path -> relative target that stays inside the bundle.
    links: dict[str, str] | UnsetType = UNSET
    #: Empty directories (every other directory is implied by the members under it).
    dirs: list[str] | UnsetType = UNSET
    #: Paths packed although they looked like secrets (``runyard bundle pack --allow``).
    allowed: list[str] | UnsetType = UNSET
    #: The signing key: sha256 fingerprint of its raw public key, and that key (hex).
    key_fingerprint: str | UnsetType = UNSET
    public_key: str | UnsetType = UNSET


class RuntimeManifest(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    version: Literal["1"] = "1"
    services: list[ServiceEntry] = []
    bundle: BundleInfo = msgspec.field(default_factory=BundleInfo)

    def find(self, name: str) -> list[ServiceEntry]:
        """Every installed entry of ``name``, newest install first."""
        found = [s for s in self.services if s.name == name]
        found.sort(key=lambda s: s.installed_at, reverse=True)
        return found

    def get(self, name: str, version: str, os_name: str, arch: str) -> ServiceEntry | None:
        for s in self.services:
            if (s.name, s.version, s.os, s.arch) == (name, version, os_name, arch):
                return s
        return None


_decoder = msgspec.json.Decoder(RuntimeManifest)
_encoder = msgspec.json.Encoder(order="sorted")

_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING_RE = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")


def decode_error_message(exc: msgspec.DecodeError, root_name: str = "") -> str:
    """Turn msgspec's `Expected `int`, got `str` - at `$.a[0].b`` into `a[0].b: expected int, got str`."""
    text = str(exc)
    path = ""
    m = _PATH_RE.search(text)
    if m:
        path = m.group("path").lstrip(".")
        text = text[: m.start()]
    m = _MISSING_RE.match(text)
    if m:
        path = f"{path}.{m.group('field')}" if path else m.group("field")
        text = "required field missing"
    m = _UNKNOWN_RE.match(text)
    if m:
        path = f"{path}.{m.group('field')}" if path else m.group("field")
        text = "unknown field"
    text = text.replace("`", "")
    if text[:1].isupper() and not text[:4].isupper():
        text = text[0].lower() + text[1:]
    where = path or root_name or "(top level)"
    return f"{where}: {text}"


def unsafe_relative_path(rel: str) -> str | None:
    """Why ``rel`` is not a safe relative path, or None. Symlinks are checked separately."""
    if not rel:
        return "must not be empty"
    if rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel) or os.path.isabs(rel):
        return "must be relative, not absolute"
    if "\\" in rel:
        return "must use / as separator"
    if "\x00" in rel:
        return "must not contain NUL"
    if ".." in rel.split("/"):
        return "must not contain '..'"
    return None


def validate_manifest(manifest: RuntimeManifest, tree: RuntimeTree | None = None) -> None:
    """Check what types cannot: digests, names, platforms, and that every binPath stays inside."""
    seen: set[tuple[str, str, str, str]] = set()
    # Resolved once: a daemon start validates the manifest of every service it has.
    real_root = os.path.realpath(tree.root) if tree is not None else None
    root = str(tree.root) if tree is not None else ""  # str paths: no pathlib per service
    for i, s in enumerate(manifest.services):
        at = f"services[{i}]"
        problem = check_name(s.name)
        if problem:
            raise ManifestError(f"{at}.name: {problem}")
        if s.name in RESERVED_NAMES:
            raise ManifestError(f"{at}.name: {s.name!r} is reserved for Runyard itself")
        if not _VERSION_RE.match(s.version):
            raise ManifestError(f"{at}.version: {s.version!r} is not a version")
        if s.os not in OSES:
            raise ManifestError(f"{at}.os: expected one of {', '.join(OSES)}, got {s.os!r}")
        if s.arch not in ARCHES:
            raise ManifestError(f"{at}.arch: expected one of {', '.join(ARCHES)}, got {s.arch!r}")
        if not HEX64.match(s.checksum):
            raise ManifestError(f"{at}.checksum: expected 64 lowercase hex characters")
        if not 0 <= s.size <= MAX_INT:
            raise ManifestError(f"{at}.size: expected a byte count 0..2**53-1, got {s.size}")
        problem = unsafe_relative_path(s.bin_path)
        if problem:
            raise ManifestError(f"{at}.binPath: {problem}")
        if not posixpath.normpath(s.bin_path).startswith(s.install_rel + "/"):
            raise ManifestError(
                f"{at}.binPath: must lie under {s.install_rel}/, got {s.bin_path!r}"
            )
        inside = tree is None or tree.contains(os.path.join(root, s.bin_path), real_root=real_root)
        if not inside:
            raise ManifestError(f"{at}.binPath: {s.bin_path!r} leaves the tree through a symlink")
        for j, port in enumerate(s.default_ports):
            if not 0 < port.port < 65536:
                raise ManifestError(
                    f"{at}.defaultPorts[{j}].port: expected 1-65535, got {port.port}"
                )
        for key in s.env:
            if not key or "=" in key or "\x00" in key:
                raise ManifestError(f"{at}.env: {key!r} is not a valid variable name")
        for rel, digest in s.files.items():
            if unsafe_relative_path(rel) or not HEX64.match(digest):
                raise ManifestError(f"{at}.files[{rel!r}]: expected a safe path and a sha256")
        key = (s.name, s.version, s.os, s.arch)
        if key in seen:
            raise ManifestError(f"{at}: {s.name} {s.version} {s.platform} is listed twice")
        seen.add(key)
    _validate_bundle(manifest.bundle)


def _validate_bundle(b: BundleInfo) -> None:
    """The bundle fields: a semver, safe member paths, hex digests and keys."""
    if b.version is not UNSET and not SEMVER_RE.match(b.version):
        raise ManifestError(f"bundle.version: {b.version!r} is not a semantic version (like 1.4.0)")
    if b.signature and not _BASE64_RE.match(b.signature):
        raise ManifestError("bundle.signature: expected base64")
    for name in ("key_fingerprint", "public_key"):
        value = getattr(b, name)
        if value is not UNSET and not HEX64.match(value):
            field = "keyFingerprint" if name == "key_fingerprint" else "publicKey"
            raise ManifestError(f"bundle.{field}: expected 64 lowercase hex characters")
    files = b.files if b.files is not UNSET else {}
    for rel, digest in files.items():
        problem = unsafe_relative_path(rel)
        if problem:
            raise ManifestError(f"bundle.files[{rel!r}]: path {problem}")
        if not HEX64.match(digest):
            raise ManifestError(f"bundle.files[{rel!r}]: expected a sha256 (64 lowercase hex)")
    for rel, size in (b.sizes if b.sizes is not UNSET else {}).items():
        if rel not in files:
            raise ManifestError(f"bundle.sizes[{rel!r}]: not in bundle.files")
        if not 0 <= size <= MAX_INT:
            raise ManifestError(f"bundle.sizes[{rel!r}]: expected a byte count 0..2**53-1")
    for rel, target in (b.links if b.links is not UNSET else {}).items():
        problem = unsafe_relative_path(rel)
        if problem:
            raise ManifestError(f"bundle.links[{rel!r}]: path {problem}")
        if rel in files:
            raise ManifestError(f"bundle.links[{rel!r}]: also listed in bundle.files")
        if not target or target.startswith("/") or "\x00" in target:
            raise ManifestError(f"bundle.links[{rel!r}]: target must be a relative path")
    for field, paths in (("executables", b.executables), ("dirs", b.dirs), ("allowed", b.allowed)):
        for i, rel in enumerate(paths if paths is not UNSET else []):
            problem = unsafe_relative_path(rel)
            if problem:
                raise ManifestError(f"bundle.{field}[{i}]: path {problem}")
            if field == "executables" and rel not in files:
                raise ManifestError(f"bundle.executables[{i}]: {rel!r} is not in bundle.files")


def parse_manifest(
    data: bytes, tree: RuntimeTree | None = None, source: str = "manifest.json"
) -> RuntimeManifest:
    """Decode and validate manifest bytes; ManifestError names the file and the field."""
    try:
        manifest = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ManifestError(f"{source}: {decode_error_message(exc)}") from None
    try:
        validate_manifest(manifest, tree)
    except ManifestError as exc:
        raise ManifestError(f"{source}: {exc}") from None
    return manifest


def load_manifest(tree: RuntimeTree) -> RuntimeManifest:
    """The tree's manifest, validated."""
    tree.require()
    data = read_capped(tree.manifest_path, MANIFEST_FILE)
    return parse_manifest(data, tree, str(tree.manifest_path))


def encode_manifest(manifest: RuntimeManifest) -> bytes:
    return msgspec.json.format(_encoder.encode(manifest), indent=2) + b"\n"


def save_manifest(tree: RuntimeTree, manifest: RuntimeManifest) -> None:
    """Validate, then write atomically; a bad manifest never reaches the disk."""
    validate_manifest(manifest)
    Path(tree.root).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(tree.manifest_path, encode_manifest(manifest))


def init_tree(tree: RuntimeTree) -> bool:
    """Lay out ``tree`` with an empty manifest; idempotent. Returns True when the manifest was
    created. (Here, not a method of RuntimeTree: writing the manifest is this module's job, and
    tree.py stays below manifest.py in the import graph.)"""
    if tree.root.exists() and not tree.root.is_dir():
        raise TreeError(f"{tree.root} exists and is not a directory")
    tree.root.mkdir(parents=True, exist_ok=True)
    for name in TOP_DIRS:
        (tree.root / name).mkdir(exist_ok=True)
    tree.archives_dir.mkdir(exist_ok=True)
    # temp/ holds the daemon lock, state and control sockets: owner only.
    os.chmod(tree.temp_dir, 0o700)
    if tree.manifest_path.exists():
        return False
    save_manifest(tree, RuntimeManifest())
    return True
