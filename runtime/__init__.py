"""The on-disk runtime tree, importable without the daemon.

import runtime
runtime.get_manifest()                      # RuntimeManifest of the resolved tree
runtime.ensure_service("hello-http", "1.x")  # ServiceBinary, fetched and verified
runtime.service_env("hello-http")           # merged env with the scoped PATH
"""

from __future__ import annotations

from .acquire import ServiceBinary, ensure_service, get_manifest
from .env import service_env
from .errors import (
    AcquisitionError,
    CatalogError,
    ChecksumMismatch,
    ManifestError,
    ProjectError,
    ResolveError,
    RunyardError,
    TreeError,
    UnsafeArchiveError,
)
from .manifest import PortDef, RuntimeManifest, ServiceEntry
from .tree import RuntimeTree

__all__ = [
    "AcquisitionError",
    "CatalogError",
    "ChecksumMismatch",
    "ManifestError",
    "PortDef",
    "ProjectError",
    "ResolveError",
    "RuntimeManifest",
    "RuntimeTree",
    "RunyardError",
    "ServiceBinary",
    "ServiceEntry",
    "TreeError",
    "UnsafeArchiveError",
    "ensure_service",
    "get_manifest",
    "service_env",
]
