"""Review finding: ``bundle pack --format run|deb|rpm`` reported (``--json``: ``attestation``)
the in-toto sidecar of the inner bundle, written in a scratch directory that is deleted before
the result is returned: a path to a file that does not exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_bundle_kit import make_tree

from runyard.runtime.bundle.packages import pack_package
from runyard.runtime.signing.keys import generate_signing_key

pytestmark = pytest.mark.timeout(60)


def test_a_package_names_no_attestation_file_that_is_gone(tmp_path: Path) -> None:
    generate_signing_key(tmp_path / "rel")
    result = pack_package(
        make_tree(tmp_path / "tree"),
        tmp_path / "out" / "rt-1.0.0.run",
        "run",
        name="ry-att",
        sign_key=tmp_path / "rel.key",
        version="1.0.0",
        created_at="2026-01-02T03:04:05Z",
    )
    assert Path(result.path).is_file()
    assert result.attestation == "" or Path(result.attestation).is_file(), result.attestation


def test_run_installer_without_runyard_says_what_it_reads(tmp_path: Path) -> None:
    """Review finding: the .run installer's "runyard is not installed" told the user to set
    RUNYARD in /etc/runyard/packages/NAME.conf, a file the .run never reads (only the deb/rpm
    setup.sh does): the advice could not work. It names --runyard instead."""
    import os
    import subprocess

    generate_signing_key(tmp_path / "rel")
    result = pack_package(
        make_tree(tmp_path / "tree"),
        tmp_path / "rt-1.0.0.run",
        "run",
        name="ry-norunyard",
        sign_key=tmp_path / "rel.key",
        version="1.0.0",
        created_at="2026-01-02T03:04:05Z",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD")}
    env.update(PATH="/usr/bin:/bin", TMPDIR=str(tmp_path))
    done = subprocess.run(
        ["sh", result.path, "--prefix", str(tmp_path / "prefix")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if "runyard is not installed" not in done.stderr:
        pytest.skip(f"a runyard is installed on this box ({done.stderr.strip()!r})")
    assert done.returncode == 1
    assert "--runyard" in done.stderr and ".conf" not in done.stderr, done.stderr
    assert not (tmp_path / "prefix").exists()
