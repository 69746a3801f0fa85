"""Review finding: a bundle version with a trailing newline passed the semver check (``$``
matches before a final newline) and then went into generated shell text: the package's
setup.sh comment line broke in two (``) and install it into`` became a command, a syntax
error in postinst), and ``versions/1.0.0\\n`` became a directory name."""

from __future__ import annotations

import pytest

from runyard.runtime.bundle.layout import BundleError
from runyard.runtime.bundle.pack import check_version
from runyard.runtime.core.manifest import SEMVER_RE


@pytest.mark.parametrize("version", ["1.0.0\n", "1.0.0-rc.1\n", "1.0.0+build\n"])
def test_version_with_a_trailing_newline_is_not_a_semantic_version(version: str) -> None:
    assert SEMVER_RE.match(version) is None
    with pytest.raises(BundleError, match="not a semantic version"):
        check_version(version)
