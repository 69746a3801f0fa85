"""Runyard's own version, read once from its installed distribution's metadata.

``runyard_version()`` is what RUN_META, replay records and the daemon's status report. From a
source tree that was never installed (no ``runyard`` distribution metadata) it is
``UNKNOWN_VERSION``, ``0+unknown``: a valid PEP 440 version that sorts before every release, so
a reader that compares versions treats it as the oldest rather than failing to parse it. Code
that truly needs an installed distribution (the wheelhouse) calls ``installed_version()`` and
raises its own error on None.
"""

from __future__ import annotations

import os
import sys

__all__ = ["UNKNOWN_VERSION", "installed_version", "runyard_version"]

DISTRIBUTION = "runyard"
UNKNOWN_VERSION = "0+unknown"


def installed_version() -> str | None:
    """The version of the installed ``runyard`` distribution; None when there is none."""
    found = _dist_info_version()
    if found is not None:
        return found
    # A distribution not laid out as a plain dist-info (an egg, a zip): ask importlib.metadata,
    # which the daemon does not import otherwise (it and the email parser cost 3 MB of RSS).
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return None


def _dist_info_version() -> str | None:
    """``Version:`` of the first ``runyard-*.dist-info/METADATA`` on sys.path, the one
    importlib.metadata would find first; None when there is none."""
    prefix = DISTRIBUTION + "-"
    for entry in sys.path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for name in names:
            if not (name.startswith(prefix) and name.endswith(".dist-info")):
                continue
            try:
                with open(os.path.join(entry or ".", name, "METADATA"), encoding="utf-8") as f:
                    for line in f:
                        if line.startswith("Version:"):
                            return line.split(":", 1)[1].strip()
                        if not line.strip():
                            break  # the end of the headers
            except OSError:
                continue
    return None


def runyard_version() -> str:
    """The installed version, or ``UNKNOWN_VERSION`` from a bare source tree."""
    return installed_version() or UNKNOWN_VERSION
