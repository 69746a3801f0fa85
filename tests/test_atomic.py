"""runtime.core.atomic: a file that matters is replaced whole or not at all."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from runyard.runtime.core.atomic import atomic_output, atomic_write_bytes


def test_atomic_output_replaces_the_file_with_the_given_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_output(target, 0o600) as fh:
        fh.write(b"new ")
        fh.seek(0)  # seekable, as zipfile needs
        fh.write(b"NEW")
        assert target.read_bytes() == b"old"  # nothing visible before the block ends
    assert target.read_bytes() == b"NEW "
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_output_leaves_the_old_file_and_no_temp_on_an_error(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="half way"), atomic_output(target) as fh:
        fh.write(b"half")
        raise RuntimeError("half way")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_the_temp_file_is_new_private_and_beside_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    decoy = tmp_path / "elsewhere"
    (tmp_path / ".out.bin.planted.tmp").symlink_to(decoy)  # a planted name is never followed
    with atomic_output(target, 0o644) as fh:
        fh.write(b"x")
        temps = [p for p in tmp_path.iterdir() if p.is_file() and not p.is_symlink()]
        assert len(temps) == 1 and temps[0].name.startswith(".out.bin.")
        assert temps[0].name.endswith(".tmp")
        assert stat.S_IMODE(temps[0].stat().st_mode) == 0o600  # private until it is complete
    assert target.read_bytes() == b"x" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert not decoy.exists()
