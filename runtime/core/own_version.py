"""Runyard's own version, read once from its installed distribution's metadata.

``runyard_version()`` is what RUN_META, replay records and the daemon's status report. From a
source tree that was never installed (no ``runyard`` distribution metadata) it is
``UNKNOWN_VERSION``, ``0+unknown``: a valid PEP 440 version that sorts before every release, so
a reader that compares versions treats it as the oldest rather than failing to parse it. Code
that truly needs an installed distribution (the wheelhouse) calls ``installed_version()`` and
raises its own error on None.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["UNKNOWN_VERSION", "installed_version", "runyard_version"]

DISTRIBUTION = "runyard"
UNKNOWN_VERSION = "0+unknown"


def installed_version() -> str | None:
    """The version of the installed ``runyard`` distribution; None when there is none."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return None


def runyard_version() -> str:
    """The installed version, or ``UNKNOWN_VERSION`` from a bare source tree."""
    return installed_version() or UNKNOWN_VERSION
