"""runtime.own_version: one runyard_version, one documented fallback."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from runyard.runtime.core.own_version import UNKNOWN_VERSION, installed_version, runyard_version

ROOT = Path(__file__).resolve().parent.parent


def test_runyard_version_is_the_installed_distributions() -> None:
    assert installed_version() == version("runyard")
    assert runyard_version() == version("runyard")


@pytest.mark.timeout(30)
def test_runyard_version_from_a_bare_source_tree_is_0_unknown() -> None:
    """Without site-packages there is no runyard distribution metadata: the one fallback."""
    code = (
        "from runyard.runtime.core.own_version import installed_version, runyard_version;"
        "print(installed_version(), runyard_version())"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    ).stdout.split()
    assert out == ["None", UNKNOWN_VERSION]
    assert UNKNOWN_VERSION == "0+unknown"
