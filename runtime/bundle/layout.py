"""What a runtime bundle holds and where: member names, modes, formats, and the errors.

    manifest.json                  always the first member; lists every other one
    bin/{svc}/{ver}/{os}-{arch}/   the selected services' install dirs
    config/{svc}/                  their config surface (schemas, defaults, templates)
    schemas/*.schema.json          Runyard's generated JSON Schemas
    wheels/*.whl, install.sh       with --with-wheels: an offline pip install of Runyard

Never in a bundle: ``data/ logs/ cache/ temp/`` (an installed version shares them with the
others) and ``config/runyard/`` (Runyard's own state for this tree: the license, its trusted
issuer keys, the remembered catalog URL; it means nothing on another box). An install prefix
shares it across versions too: ``versions/<v>/config/runyard -> ../../../config/runyard``
(``prefix.Prefix.share_own_config``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from msgspec import UNSET

from runyard.runtime.core.errors import RunyardError
from runyard.runtime.core.manifest import BundleInfo

__all__ = [
    "DIR_MODE",
    "EXEC_MODE",
    "FILE_MODE",
    "FORMATS",
    "INSTALL_SH",
    "MANIFEST",
    "OWN_CONFIG",
    "SHARED_DIRS",
    "BundleContents",
    "BundleError",
    "Finding",
    "SecretsFound",
    "bundle_format",
    "contents_of",
    "member_problem",
]

MANIFEST = "manifest.json"
INSTALL_SH = "install.sh"
FORMATS = ("tar.gz", "zip")
FILE_MODE = 0o644
EXEC_MODE = 0o755
DIR_MODE = 0o755
#: Top-level dirs of a tree that an installed version shares with the others (never packed).
SHARED_DIRS = ("data", "logs", "cache", "temp")
#: Runyard's own config (license, issuer keys, remembered catalog): never packed, and shared
#: across the versions of an install prefix like the dirs above (a link, made by prefix.py).
OWN_CONFIG = "config/runyard"
#: Where members may live: top-level dir -> what it is (for messages).
_PACKED_TOPS = ("bin", "config", "schemas", "wheels")


class BundleError(RunyardError):
    """A bundle cannot be packed, verified, installed or rolled back; str() is one line."""


@dataclass(frozen=True)
class Finding:
    """Something that looks like a secret: the member path and why (never the value)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


#: How many findings the one-line error names; `--json` (and ``.findings``) has them all.
SHOWN_FINDINGS = 10


class SecretsFound(BundleError):
    """Files or values that look like secrets: packing refused before anything is written."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        paths = sorted({f.path for f in findings})
        listed = "; ".join(str(f) for f in findings[:SHOWN_FINDINGS])
        if len(findings) > SHOWN_FINDINGS:
            listed += f"; and {len(findings) - SHOWN_FINDINGS} more (--json lists every one)"
        super().__init__(
            f"refusing to pack {len(findings)} secret-looking item(s) in {len(paths)} path(s) "
            f"(values not shown; pass --allow PATH for each path that holds no secret): {listed}"
        )


@dataclass
class BundleContents:
    """The bundle fields of a manifest, with the defaults of a tree that was never packed."""

    version: str = ""
    files: dict[str, str] = field(default_factory=dict)
    executables: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)
    key_fingerprint: str = ""
    public_key: str = ""
    signature: str = ""
    created_at: str = ""
    source: str = ""


def contents_of(info: BundleInfo) -> BundleContents:
    """The bundle fields of ``info``, an unset field read as its empty value."""
    b = msgspec.structs.asdict(info)
    b = {k: v for k, v in b.items() if v is not UNSET}
    return BundleContents(
        version=b.get("version", ""),
        files=dict(b.get("files", {})),
        executables=set(b.get("executables", [])),
        links=dict(b.get("links", {})),
        dirs=list(b.get("dirs", [])),
        allowed=list(b.get("allowed", [])),
        key_fingerprint=b.get("key_fingerprint", ""),
        public_key=b.get("public_key", ""),
        signature=b["signature"],
        created_at=b["created_at"],
        source=b["source"],
    )


def bundle_format(path: str | os.PathLike[str], explicit: str | None = None) -> str:
    """ "tar.gz" or "zip": ``explicit`` (``--format``) or the file name's suffix; both must agree."""
    name = Path(path).name.lower()
    by_name = (
        "tar.gz" if name.endswith((".tar.gz", ".tgz")) else "zip" if name.endswith(".zip") else None
    )
    if explicit is not None:
        if explicit not in FORMATS:
            raise BundleError(f"--format {explicit}: expected one of {', '.join(FORMATS)}")
        if by_name is not None and by_name != explicit:
            raise BundleError(
                f"{Path(path).name}: the name says {by_name}, --format says {explicit}"
            )
        return explicit
    if by_name is None:
        raise BundleError(
            f"{Path(path).name}: cannot tell the bundle format from the name "
            "(use .tar.gz or .zip, or pass --format)"
        )
    return by_name


def member_problem(rel: str) -> str | None:
    """Why ``rel`` has no place in a bundle, or None."""
    if rel in (MANIFEST, INSTALL_SH):
        return None
    top, _, rest = rel.partition("/")
    if top in SHARED_DIRS:
        return f"is under {top}/, which a bundle never carries"
    if top not in _PACKED_TOPS:
        return f"is outside {', '.join(t + '/' for t in _PACKED_TOPS)} (and not {INSTALL_SH})"
    if top == "config" and rest.split("/", 1)[0] == "runyard":
        return "is under config/runyard/, Runyard's own state, which a bundle never carries"
    return None
