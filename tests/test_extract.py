"""runtime.extract: good archives extract whole; hostile ones are refused before any write.

Every archive is built here with tarfile/zipfile, so each test shows exactly what it feeds in.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from archives import Raw, make_raw_archive
from runyard.runtime.acquisition.extract import archive_format, extract_archive
from runyard.runtime.core.errors import TreeError, UnsafeArchiveError


@dataclass
class M(Raw):
    """One member to put in a test archive (a file holding ``x`` unless said otherwise)."""

    data: bytes = b"x"


build = make_raw_archive


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    # Two levels below tmp_path: an escape of "../../outside" from the temp dir beside dest
    # would land on tmp_path/outside, which every refusal test checks is absent.
    return tmp_path / "out" / "svc"


def assert_nothing_written(tmp_path: Path, dest: Path) -> None:
    assert not os.path.lexists(dest)
    if dest.parent.exists():
        assert list(dest.parent.iterdir()) == []
    assert not os.path.lexists(tmp_path / "outside")
    assert not os.path.lexists(tmp_path / "evil")


FORMATS = ["svc.tar.gz", "svc.tar.xz", "svc.zip"]

TOOL = b"#!/bin/sh\necho hi\n"
README = b"read me\n"
DEEP = os.urandom((1 << 20) + 17)  # more than one chunk


@pytest.mark.parametrize("archive_name", FORMATS)
def test_extracts_nested_tree_with_modes_and_digests(
    tmp_path: Path, dest: Path, archive_name: str
) -> None:
    archive = build(
        tmp_path / "archives" / archive_name,
        [
            M("bin/", kind="dir", mode=0o755),
            M("bin/tool", TOOL, mode=0o755),
            M("README", README, mode=0o644),
            M("lib/deep/er/blob.bin", DEEP, mode=0o640),
            M("share/run", b"run", mode=0o777),
        ],
    )
    digests = extract_archive(archive, dest)

    assert digests == {
        "bin/tool": sha(TOOL),
        "README": sha(README),
        "lib/deep/er/blob.bin": sha(DEEP),
        "share/run": sha(b"run"),
    }
    assert (dest / "bin/tool").read_bytes() == TOOL
    assert (dest / "lib/deep/er/blob.bin").read_bytes() == DEEP
    assert stat.S_IMODE((dest / "bin/tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "README").stat().st_mode) == 0o644
    assert stat.S_IMODE((dest / "lib/deep/er/blob.bin").stat().st_mode) == 0o640
    # group/other write is dropped, the exec bits stay
    assert stat.S_IMODE((dest / "share/run").stat().st_mode) == 0o755
    for d in (dest, dest / "bin", dest / "lib", dest / "lib/deep/er"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert sorted(p.name for p in dest.parent.iterdir()) == ["svc"]


@pytest.mark.parametrize("archive_name", FORMATS)
def test_bin_path_is_made_executable(tmp_path: Path, dest: Path, archive_name: str) -> None:
    archive = build(tmp_path / archive_name, [M("./bin/server", b"elf", mode=0o644)])
    digests = extract_archive(archive, dest, bin_path="bin/server")
    assert digests == {"bin/server": sha(b"elf")}
    assert stat.S_IMODE((dest / "bin/server").stat().st_mode) == 0o755


def test_zip_without_unix_attributes_gets_default_modes(tmp_path: Path, dest: Path) -> None:
    archive = build(
        tmp_path / "svc.zip",
        [M("dir/", kind="dir", mode=0), M("dir/app.exe", b"MZ", mode=0o755)],
        create_system=0,
    )
    assert extract_archive(archive, dest) == {"dir/app.exe": sha(b"MZ")}
    assert stat.S_IMODE((dest / "dir/app.exe").stat().st_mode) == 0o644
    assert stat.S_IMODE((dest / "dir").stat().st_mode) == 0o755


@pytest.mark.parametrize("archive_name", ["svc.tar.gz", "svc.zip"])
def test_internal_symlinks_are_kept_but_not_hashed(
    tmp_path: Path, dest: Path, archive_name: str
) -> None:
    archive = build(
        tmp_path / archive_name,
        [
            M("lib/libfoo.so.1", b"so", mode=0o755),
            M("lib/libfoo.so", kind="symlink", mode=0o777, target="libfoo.so.1"),
            M("current", kind="symlink", mode=0o777, target="lib"),
        ],
    )
    assert extract_archive(archive, dest) == {"lib/libfoo.so.1": sha(b"so")}
    assert os.readlink(dest / "lib/libfoo.so") == "libfoo.so.1"
    assert (dest / "current/libfoo.so").read_bytes() == b"so"


def test_internal_hard_link_shares_digest(tmp_path: Path, dest: Path) -> None:
    archive = build(
        tmp_path / "svc.tar.xz",
        [M("bin/a", b"same", mode=0o755), M("bin/b", kind="hardlink", target="bin/a")],
    )
    assert extract_archive(archive, dest) == {"bin/a": sha(b"same"), "bin/b": sha(b"same")}
    assert (dest / "bin/a").stat().st_ino == (dest / "bin/b").stat().st_ino


def test_directory_listed_twice_is_fine(tmp_path: Path, dest: Path) -> None:
    archive = build(
        tmp_path / "svc.tar.gz",
        [M("d", kind="dir", mode=0o755), M("d/f"), M("d", kind="dir", mode=0o755)],
    )
    assert extract_archive(archive, dest) == {"d/f": sha(b"x")}


def test_max_bytes(tmp_path: Path, dest: Path) -> None:
    archive = build(tmp_path / "svc.tar.gz", [M("a", b"1234"), M("b", b"5678")])
    with pytest.raises(UnsafeArchiveError, match="expands to 8 bytes, more than the limit of 7"):
        extract_archive(archive, dest, max_bytes=7)
    assert_nothing_written(tmp_path, dest)
    assert extract_archive(archive, dest, max_bytes=8).keys() == {"a", "b"}


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.tar.gz", "tar.gz"),
        ("A.TGZ", "tar.gz"),
        ("a-1.0.tar.xz", "tar.xz"),
        ("a.txz", "tar.xz"),
        ("a.zip", "zip"),
    ],
)
def test_archive_format(name: str, fmt: str) -> None:
    assert archive_format(Path("/x") / name) == fmt
    assert archive_format(name) == fmt


@pytest.mark.parametrize("name", ["a.tar", "a.tar.bz2", "a.7z", "a.gz", "zip"])
def test_unsupported_format(tmp_path: Path, dest: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"whatever")
    expected = f"{name}: unsupported archive format (expected .tar.gz, .tar.xz or .zip)"
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_archive(tmp_path / name, dest)
    assert str(exc.value) == expected
    assert_nothing_written(tmp_path, dest)


def test_existing_dest_is_refused_and_left_alone(tmp_path: Path, dest: Path) -> None:
    archive = build(tmp_path / "svc.tar.gz", [M("new")])
    dest.mkdir(parents=True)
    (dest / "old").write_text("keep")
    with pytest.raises(TreeError, match="already exists"):
        extract_archive(archive, dest)
    assert [p.name for p in dest.iterdir()] == ["old"]
    assert [p.name for p in dest.parent.iterdir()] == ["svc"]


@pytest.mark.parametrize(
    ("bin_path", "reason"),
    [
        ("bin/missing", "binPath 'bin/missing' is not in the archive"),
        ("../bin/server", "binPath '../bin/server' is not in the archive"),
        ("bin", "binPath 'bin' is a dir, not a regular file"),
        ("bin/link", "binPath 'bin/link' is a symlink, not a regular file"),
    ],
)
def test_bin_path_must_be_a_regular_member(
    tmp_path: Path, dest: Path, bin_path: str, reason: str
) -> None:
    archive = build(
        tmp_path / "svc.tar.gz",
        [
            M("bin", kind="dir", mode=0o755),
            M("bin/server", b"elf"),
            M("bin/link", kind="symlink", target="server"),
        ],
    )
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_archive(archive, dest, bin_path=bin_path)
    assert str(exc.value) == f"svc.tar.gz: {reason}"
    assert_nothing_written(tmp_path, dest)


# --- hostile archives -------------------------------------------------------------------------

SYM = "symlink"
MALICIOUS = [
    ("zip-slip", "evil.zip", [M("ok"), M("../evil")], "member '../evil' escapes the target"),
    ("zip-slip-deep", "evil.zip", [M("../../outside")], "escapes the target (contains '..')"),
    ("tar-dotdot", "evil.tar.gz", [M("a/../../outside")], "escapes the target"),
    ("zip-backslash", "evil.zip", [M("..\\..\\outside")], "escapes the target"),
    ("tar-absolute", "evil.tar.gz", [M("/etc/passwd")], "member '/etc/passwd' is an absolute"),
    ("zip-absolute", "evil.zip", [M("/tmp/evil")], "member '/tmp/evil' is an absolute path"),
    ("zip-drive", "evil.zip", [M("C:/Windows/evil")], "is an absolute path"),
    (
        "tar-symlink-then-write",
        "evil.tar.gz",
        [M("d", kind=SYM, target="../../outside"), M("d/x")],
        "member 'd' is a symlink to '../../outside', outside the target",
    ),
    (
        "tar-symlink-etc-then-write",
        "evil.tar.xz",
        [M("etc", kind=SYM, target="/etc"), M("etc/cron.d/x")],
        "member 'etc' is a symlink to an absolute path ('/etc')",
    ),
    (
        "tar-symlink-out",
        "evil.tar.gz",
        [M("a/b/link", kind=SYM, target="../../../x")],
        "is a symlink to '../../../x', outside the target",
    ),
    (
        "tar-symlink-chain",
        "evil.tar.gz",
        [M("d", kind=SYM, target="."), M("e", kind=SYM, target="d/..")],
        "member 'e' is a symlink to 'd/..', outside the target",
    ),
    (
        "tar-symlink-loop",
        "evil.tar.gz",
        [M("a", kind=SYM, target="b"), M("b", kind=SYM, target="a")],
        "is a symlink in a loop",
    ),
    (
        "member-under-symlink-dir",
        "evil.tar.gz",
        [M("sub", kind="dir"), M("d", kind=SYM, target="sub"), M("d/x")],
        "member 'd/x' is under symlink 'd'",
    ),
    (
        "symlink-after-member",
        "evil.tar.gz",
        [M("d/x"), M("d", kind=SYM, target=".")],
        "member 'd/x' is under symlink 'd'",
    ),
    (
        "member-under-file",
        "evil.tar.gz",
        [M("f"), M("f/x")],
        "member 'f/x' is under regular file 'f'",
    ),
    (
        "tar-hardlink-etc",
        "evil.tar.gz",
        [M("passwd", kind="hardlink", target="/etc/passwd")],
        "is a hard link to '/etc/passwd', outside the target",
    ),
    (
        "tar-hardlink-dotdot",
        "evil.tar.gz",
        [M("x", kind="hardlink", target="../x")],
        "is a hard link to '../x', outside the target",
    ),
    (
        "tar-hardlink-later",
        "evil.tar.gz",
        [M("x", kind="hardlink", target="y"), M("y")],
        "member 'x' is a hard link to 'y', not an earlier regular file",
    ),
    (
        "tar-hardlink-to-symlink",
        "evil.tar.gz",
        [M("s", kind=SYM, target="t"), M("t"), M("x", kind="hardlink", target="s")],
        "not an earlier regular file",
    ),
    ("tar-chrdev", "evil.tar.gz", [M("null", kind="chr")], "'null' is a character device"),
    ("tar-blkdev", "evil.tar.xz", [M("sda", kind="blk")], "'sda' is a block device"),
    ("tar-fifo", "evil.tar.gz", [M("pipe", kind="fifo")], "member 'pipe' is a FIFO"),
    ("zip-chrdev", "evil.zip", [M("null", kind="chr")], "is a character device"),
    ("zip-fifo", "evil.zip", [M("pipe", kind="fifo")], "is a FIFO"),
    ("tar-setuid", "evil.tar.gz", [M("su", mode=0o4755)], "member 'su' has the setuid bit"),
    ("tar-setgid", "evil.tar.gz", [M("sg", mode=0o2755)], "member 'sg' has the setgid bit"),
    ("tar-sticky-dir", "evil.tar.gz", [M("t", kind="dir", mode=0o1777)], "has the sticky bit"),
    ("zip-setuid", "evil.zip", [M("su", mode=0o4755)], "member 'su' has the setuid bit"),
    ("zip-setgid", "evil.zip", [M("sg", mode=0o2755)], "member 'sg' has the setgid bit"),
    (
        "zip-symlink-out",
        "evil.zip",
        [M("d", kind=SYM, target="../../outside"), M("d/x")],
        "member 'd' is a symlink to '../../outside', outside the target",
    ),
    (
        "zip-symlink-absolute",
        "evil.zip",
        [M("etc", kind=SYM, target="/etc")],
        "is a symlink to an absolute path",
    ),
    (
        "zip-member-under-symlink",
        "evil.zip",
        [M("d", kind=SYM, target="."), M("d/x")],
        "member 'd/x' is under symlink 'd'",
    ),
    ("tar-duplicate", "evil.tar.gz", [M("a", b"1"), M("a", b"2")], "appears more than once"),
    ("tar-duplicate-dot", "evil.tar.gz", [M("a", b"1"), M("./a", b"2")], "appears more than"),
    ("zip-duplicate", "evil.zip", [M("a", b"1"), M("a", b"2")], "appears more than once"),
    ("file-then-dir", "evil.tar.gz", [M("a"), M("a", kind="dir")], "appears more than once"),
    ("empty-symlink", "evil.tar.gz", [M("l", kind=SYM, target="")], "with an empty target"),
    ("root-as-file", "evil.tar.gz", [M("./")], "has an empty name"),
]


@pytest.mark.filterwarnings("ignore::UserWarning")  # zipfile: "Duplicate name"
@pytest.mark.parametrize(
    ("archive_name", "members", "reason"),
    [pytest.param(a, m, r, id=i) for i, a, m, r in MALICIOUS],
)
def test_hostile_archive_is_refused_before_writing(
    tmp_path: Path, dest: Path, archive_name: str, members: list[M], reason: str
) -> None:
    archive = build(tmp_path / "archives" / archive_name, members)
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_archive(archive, dest)
    message = str(exc.value)
    assert message.startswith(f"{archive_name}: ")
    assert reason in message
    assert "\n" not in message
    assert_nothing_written(tmp_path, dest)


def test_nul_in_member_name(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("plain")
        ti.pax_headers = {"path": "a\x00b"}
        tf.addfile(ti, io.BytesIO(b""))
    with pytest.raises(UnsafeArchiveError, match="contains NUL"):
        extract_archive(archive, dest)
    assert_nothing_written(tmp_path, dest)


def _truncated(tmp_path: Path, name: str) -> Path:
    good = build(tmp_path / "good" / name, [M("big", os.urandom(200_000)), M("b", b"2")])
    bad = tmp_path / name
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return bad


@pytest.mark.parametrize("name", FORMATS)
def test_truncated_archive(tmp_path: Path, dest: Path, name: str) -> None:
    with pytest.raises(UnsafeArchiveError, match=f"^{re.escape(name)}: cannot read archive: "):
        extract_archive(_truncated(tmp_path, name), dest)
    assert_nothing_written(tmp_path, dest)


@pytest.mark.parametrize("name", FORMATS)
def test_garbage_archive(tmp_path: Path, dest: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"this is not an archive at all" * 10)
    with pytest.raises(UnsafeArchiveError, match=f"^{re.escape(name)}: cannot read archive: "):
        extract_archive(tmp_path / name, dest)
    assert_nothing_written(tmp_path, dest)


def test_missing_archive(tmp_path: Path, dest: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match=r"^gone\.zip: cannot read archive: "):
        extract_archive(tmp_path / "gone.zip", dest)
    assert_nothing_written(tmp_path, dest)


def test_corruption_found_while_writing_leaves_nothing(tmp_path: Path, dest: Path) -> None:
    # The headers are fine, so every check passes and writing starts; the bad CRC of the
    # second member shows only when its bytes are read. The temp dir must still go.
    archive = tmp_path / "svc.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("first", b"fine")
        zf.writestr("second", b"MARKER-bytes")
    raw = archive.read_bytes().replace(b"MARKER", b"MARKES")
    archive.write_bytes(raw)
    with pytest.raises(UnsafeArchiveError, match=r"^svc\.zip: cannot read archive: .*CRC"):
        extract_archive(archive, dest)
    assert_nothing_written(tmp_path, dest)
