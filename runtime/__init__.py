"""The on-disk runtime tree, importable without the daemon.

from runyard import runtime
runtime.get_manifest()                      # RuntimeManifest of the resolved tree
runtime.ensure_service("hello-http", "1.x")  # ServiceBinary, fetched and verified
runtime.service_env("hello-http")           # merged env with the scoped PATH
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names load on first use (PEP 562): importing one module of the package (the daemon needs
# the manifest, not urllib and tarfile) does not pay for all of them.
_WHERE = {
    "ServiceBinary": "acquisition.ensure",
    "ensure_service": "acquisition.ensure",
    "get_manifest": "acquisition.ensure",
    "service_env": "config.env",
    "PortDef": "core.manifest",
    "RuntimeManifest": "core.manifest",
    "ServiceEntry": "core.manifest",
    "RuntimeTree": "core.tree",
}
_ERRORS = (
    "AcquisitionError",
    "CatalogError",
    "ChecksumMismatch",
    "ManifestError",
    "ProjectError",
    "ResolveError",
    "RunyardError",
    "TreeError",
    "UnsafeArchiveError",
)
_WHERE.update(dict.fromkeys(_ERRORS, "core.errors"))

if TYPE_CHECKING:
    from runyard.runtime.acquisition.ensure import ServiceBinary, ensure_service, get_manifest
    from runyard.runtime.config.env import service_env
    from runyard.runtime.core.errors import (
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
    from runyard.runtime.core.manifest import PortDef, RuntimeManifest, ServiceEntry
    from runyard.runtime.core.tree import RuntimeTree


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


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
