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
