"""The exception tree of the runtime package.

    RunyardError                 anything Runyard refuses or cannot do; str() is one line
    ├── ManifestError            manifest.json (or another file we own) is malformed
    ├── ProjectError             runyard.toml / env.toml / user config is malformed
    ├── CatalogError             a catalog cannot be read or is malformed
    │   └── CatalogUnreachable   fetching it failed (host down, HTTP error, no such file)
    ├── ResolveError             no archive matches a name / version spec / platform
    ├── AcquisitionError         fetching an archive failed
    │   └── ChecksumMismatch     the bytes we got are not the bytes the catalog promised
    ├── UnsafeArchiveError       an archive tries to write outside its directory, or worse
    ├── FileRefused              a file to parse is too big, not a regular file, or a link not followed
    ├── NoSpaceError             the disk cannot hold what must be written (checked or ENOSPC)
    └── TreeError                the runtime tree is missing, or a path escapes it

Every message names the thing that is wrong, so the CLI prints it on one line as it is.
"""

from __future__ import annotations

__all__ = [
    "AcquisitionError",
    "CatalogError",
    "CatalogUnreachable",
    "ChecksumMismatch",
    "FileRefused",
    "ManifestError",
    "NoSpaceError",
    "ProjectError",
    "ResolveError",
    "RunyardError",
    "TreeError",
    "UnsafeArchiveError",
]


class RunyardError(Exception):
    """Base of every error Runyard raises on purpose."""


class ManifestError(RunyardError):
    """A manifest (or another file we own) does not match its schema."""


class ProjectError(RunyardError):
    """A project file or an env/config override file is malformed."""


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


class FileRefused(RunyardError):
    """A file we were to parse is refused before a byte is read (size cap, type, symlink)."""


class NoSpaceError(RunyardError):
    """No space left on device for a download, an extraction or a record; nothing half written."""


class TreeError(RunyardError):
    """The runtime tree is missing or a path would leave it."""
