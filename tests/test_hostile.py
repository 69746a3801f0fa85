"""Nothing half written, even when the world is hostile: a full disk, a huge or endless file
where JSON should be, a catalog host that is down, a tampered runtime bundle of an installed version.

Each test is named after the finding it guards and failed before its fix. Everything is real:
a tmpfs mounted for the test (root only), a loopback http.server, real archives and runtime bundles.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import resource
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CountingServer
from test_bundle_kit import bin_file, cli, make_tree, rewrite

from archives import archive_record, make_tar, program, publish, write_catalog
from runyard.runtime.bundle import pack_bundle
from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.tree import RuntimeTree

# --- 1: a full disk during runtime ensure -----------------------------------------------------


@contextlib.contextmanager
def small_disk(where: Path, size: str, inodes: int | None = None) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` for the block (root only), always unmounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir(parents=True)
    opts = f"size={size},mode=0755" + (f",nr_inodes={inodes}" if inodes else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


class _Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n


def make_bomb(path: Path, name: str, expands_to: int) -> Path:
    """A .tar.gz of a few MiB holding ``bin/<name>``: ``expands_to`` bytes of zeros."""
    with (
        gzip.GzipFile(path, "wb", compresslevel=1, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w:") as tf,
    ):
        info = tarfile.TarInfo(f"bin/{name}")
        info.size, info.mode = expands_to, 0o755
        tf.addfile(info, io.BufferedReader(_Zeros(expands_to), 1 << 20))
    return path


def tree_files(root: Path) -> set[str]:
    """Every path under bin/ and cache/, dirs too."""
    return {
        p.relative_to(root).as_posix() for top in ("bin", "cache") for p in (root / top).rglob("*")
    }


@pytest.mark.timeout(180)
def test_disk_full_during_ensure_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """A 1 GiB decompression bomb (or a catalog size of 1e12) on a small disk ended in
    `internal error: OSError: [Errno 28]` and left bin/svc2/1.0.0/, a partial cache archive and
    a cache record behind. Sizes that are known are checked first; ENOSPC that comes anyway
    (here: no inodes left) is the same one line; a failed ensure leaves bin/ and cache/ as
    they were."""
    served = tmp_path / "served"
    served.mkdir()
    bomb = make_bomb(served / "svc2-1.0.0.tar.gz", "svc2", 1 << 30)
    many = make_tar(
        served / "svc3-1.0.0.tar.gz",
        {"bin/svc3": program("svc3"), **{f"share/{i:03}": b"x" for i in range(200)}},
    )
    huge = archive_record(bomb, "svc4", "1.0.0", size=10**12, sha256="0" * 64)
    records = [
        archive_record(bomb, "svc2", "1.0.0"),
        archive_record(many, "svc3", "1.0.0"),
        huge,
        publish(served, "hello", "1.0.0"),
    ]
    write_catalog(served / "catalog.json", records)
    server = CountingServer(served)
    try:
        with small_disk(tmp_path / "disk", "16m", inodes=150) as disk:
            rt = disk / "rt"
            init_tree(RuntimeTree(rt))  # only `runtime init` lays out a tree, not ensure
            url = f"{server.url}/catalog.json"
            out = cli(
                "runtime", "ensure", "hello", "--catalog", url, "--root", str(rt), cwd=tmp_path
            )
            assert out.returncode == 0, out.stderr
            before = tree_files(rt)
            manifest = (rt / "manifest.json").read_bytes()
            index = (rt / "cache" / "index.json").read_bytes()

            def refused(name: str, doing: str) -> str:
                out = cli("runtime", "ensure", name, "--root", str(rt), cwd=tmp_path)
                assert out.returncode == 1, out.stdout + out.stderr
                (line,) = out.stderr.splitlines()
                assert line.startswith(f"runyard: no space left on device while {doing}: "), line
                assert tree_files(rt) == before
                assert (rt / "manifest.json").read_bytes() == manifest
                assert (rt / "cache" / "index.json").read_bytes() == index
                return line

            line = refused("svc2", "extracting svc2 1.0.0 into bin/")
            assert re.search(r": needs 1\.0 GiB, \d+\.\d MiB free$", line), line
            asked = len(server.requests)
            line = refused("svc4", "downloading svc4 1.0.0 into cache/")
            assert re.search(r": needs 931\.3 GiB, \d+\.\d MiB free$", line), line
            assert len(server.requests) == asked + 1  # the catalog only: no byte of the archive
            line = refused("svc3", "extracting svc3 1.0.0 into bin/")
            assert re.search(r": \d+\.\d MiB free$", line), line
            # The disk has all its space back: what fits still installs.
            for p in served.glob("hello-*"):
                p.unlink()
            hello2 = publish(served, "hello", "2.0.0")
            write_catalog(served / "catalog.json", [*records, hello2])
            out = cli("runtime", "ensure", "hello", "2.0.0", "--root", str(rt), cwd=tmp_path)
            assert out.returncode == 0, out.stderr
    finally:
        server.close()


# --- 2: a huge or endless file where JSON should be -------------------------------------------

GiB = 1 << 30


#: Runs the CLI and, at exit, writes the process's own peak RSS (VmHWM of /proc/self/status) to
#: argv[1]. Not the child's ru_maxrss: Linux carries the forking parent's high-water mark into
#: it (a pytest process that just built 100 MiB frames would count as the child's peak).
PEAK = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(out, "w").write(str(int(line.split()[1]) * 1024))
atexit.register(peak)
sys.argv[0] = "runyard"
runpy.run_module("daemon", run_name="__main__", alter_sys=True)
"""


def run_capped(args: list[str], cwd: Path) -> tuple[int, str, str, int]:
    """``runyard ARGS`` in a child limited to 4 GiB of address space (so a regression cannot
    take the machine down); (exit code, stdout, stderr, peak RSS in bytes) of that child."""
    from test_bundle_kit import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env["XDG_CONFIG_HOME"] = str(cwd / "xdg")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 * GiB, 4 * GiB))

    out, err, hwm = cwd / "child.out", cwd / "child.err", cwd / "child.peak"
    with open(out, "wb") as o, open(err, "wb") as e:
        child = subprocess.Popen(
            [sys.executable, "-c", PEAK, str(hwm), *args],
            cwd=REPO,
            env=env,
            stdout=o,
            stderr=e,
            preexec_fn=limit,
        )
        child.wait(timeout=100)
    return (child.returncode, out.read_text(), err.read_text(), int(hwm.read_text()))


@pytest.fixture(scope="module")
def sealed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sealed (unsigned) heat1d run."""
    from test_runs_kit import SAMPLE, build_catalogs, install

    from runyard.runtime.core.manifest import init_tree
    from runyard.runtime.core.tree import RuntimeTree
    from runyard.runtime.runs import execute_and_seal

    with pytest.MonkeyPatch.context() as mp:
        base = tmp_path_factory.mktemp("runs")
        mp.setenv("XDG_CONFIG_HOME", str(base / "xdg"))
        tree = RuntimeTree(base / "runtime")
        init_tree(tree)
        install(tree, build_catalogs(tmp_path_factory), "heat1d")
        done = execute_and_seal(tree, "heat1d", SAMPLE["inputs"], parameters=SAMPLE["parameters"])
        return Path(done.run_dir)


def _huge(path: Path) -> None:
    path.unlink()
    with open(path, "wb") as fh:
        fh.truncate(2 * GiB)  # sparse: 2 GiB to read, no disk used


def _dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("hostile", [_huge, _dev_zero], ids=["sparse-2GiB", "symlink-dev-zero"])
def test_verify_of_a_huge_or_endless_run_meta_refuses_it_unread(
    sealed_run: Path, tmp_path: Path, hostile
) -> None:
    """`runyard verify` of a sealed run whose RUN_META.json was a 2 GiB sparse file (or a
    symlink to /dev/zero) read it whole: MemoryError at 2-3 GiB RSS. It is now named under
    required-files, never read or hashed, and no link is followed out of the run directory."""
    from test_runs_kit import copy_run_dir

    run_dir = copy_run_dir(sealed_run, tmp_path / "run")
    hostile(run_dir / "RUN_META.json")
    code, out, err, rss = run_capped(["verify", str(run_dir), "--json"], tmp_path)
    assert code == 1, err
    report = json.loads(out)
    (required,) = [c for c in report["checks"] if c["name"] == "required-files"]
    assert not required["ok"]
    assert "RUN_META.json: is " in required["detail"], required["detail"]
    assert "refused unread" in required["detail"]
    assert rss < 400 * 1024 * 1024, f"peak RSS {rss / 2**20:.0f} MiB"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("rel", "args"),
    [
        ("manifest.json", ["runtime", "ls"]),
        ("cache/index.json", ["runtime", "gc", "--max-bytes", "1G"]),
        ("config/runyard/catalog.json", ["runtime", "ensure", "web"]),
    ],
)
@pytest.mark.parametrize("hostile", [_huge, _dev_zero], ids=["sparse-2GiB", "symlink-dev-zero"])
def test_every_json_file_of_the_tree_is_capped(tmp_path: Path, rel: str, args, hostile) -> None:
    """The tree's own JSON files were read whole too: one line naming the file, exit 1."""
    served = tmp_path / "served"
    served.mkdir()
    write_catalog(served / "catalog.json", [publish(served, "web", "1.0.0")])
    root = tmp_path / "rt"
    init_tree(RuntimeTree(root))  # only `runtime init` lays out a tree, not ensure
    out = cli(
        "runtime",
        "ensure",
        "web",
        "--catalog",
        str(served / "catalog.json"),
        "--root",
        str(root),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    hostile(root / rel)
    code, _out, err, rss = run_capped([*args, "--root", str(root)], tmp_path)
    assert code == 1, err
    (line,) = err.splitlines()
    assert line.startswith(f"runyard: {root / rel}: is "), line
    assert rss < 400 * 1024 * 1024, f"peak RSS {rss / 2**20:.0f} MiB"


# --- 3: offline, the catalog host down ------------------------------------------------------


@pytest.mark.timeout(120)
def test_offline_ensure_resolves_against_the_saved_catalog_and_exact_needs_none(
    tmp_path: Path,
) -> None:
    """`runtime ensure hello 1.2.x` with 1.2.10 installed and the catalog host down failed
    with `Connection refused`: the catalog was fetched on every ensure and kept nowhere."""
    served = tmp_path / "served"
    served.mkdir()
    write_catalog(
        served / "catalog.json", [publish(served, "hello", v) for v in ("1.2.9", "1.2.10")]
    )
    root = str(tmp_path / "rt")
    init_tree(RuntimeTree(root))  # only `runtime init` lays out a tree, not ensure
    server = CountingServer(served)
    try:
        url = f"{server.url}/catalog.json"
        out = cli(
            "runtime", "ensure", "hello", "1.2.x", "--catalog", url, "--root", root, cwd=tmp_path
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("installed hello 1.2.10 ") and out.stderr == ""
    finally:
        server.close()  # the host is down: connecting to its port is refused

    out = cli("runtime", "ensure", "hello", "1.2.x", "--root", root, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("hello 1.2.10 ") and "already installed" in out.stdout
    (line,) = out.stderr.splitlines()
    assert re.fullmatch(
        rf"runyard: catalog {re.escape(url)}: .*Connection refused; using the copy fetched "
        r"\d+s ago \(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)",
        line,
    ), line
    # A version the copy knows but the tree lacks still needs its archive: one line.
    out = cli("runtime", "ensure", "hello", "1.2.9", "--root", root, cwd=tmp_path)
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1, out.stderr
    assert re.fullmatch(
        r"runyard: http://\S+/hello-1\.2\.9\.tar\.gz: .*Connection refused "
        r"\(resolved against the copy fetched \d+s ago \(.*\)\)\n",
        out.stderr,
    ), out.stderr
    # An installed exact version needs no catalog at all, not even the copy.
    for name in ("catalog.json", "catalog-copy.json"):
        (tmp_path / "rt" / "config" / "runyard" / name).unlink()
    out = cli("runtime", "ensure", "hello", "1.2.10", "--root", root, cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert "already installed" in out.stdout


# --- 4: a tampered runtime bundle of the installed, current version--------------------------------


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """1.0.0 and 1.1.0 of one tree, and 1.0.0 with one binary changed (same size, so only its
    sha256 can tell), all unsigned tar.gz."""
    base = tmp_path_factory.mktemp("release")
    tree = make_tree(base / "src")
    good = Path(pack_bundle(tree, base / "rt-1.0.0.tar.gz", version="1.0.0").path)
    newer = Path(pack_bundle(tree, base / "rt-1.1.0.tar.gz", version="1.1.0").path)
    binary = (
        "bin/web/1.0.0/"
        + bin_file(tree.root, "web").relative_to(tree.root / "bin" / "web" / "1.0.0").as_posix()
    )

    def tamper(members):
        (m,) = [m for m in members if m.name == binary]
        m.data = m.data.replace(b"up", b"UP")
        return members

    bad = rewrite(good, base / "TAMPERED-1.0.0.tar.gz", tamper)
    return {"good": good, "newer": newer, "bad": bad, "binary": Path(binary)}


@pytest.mark.timeout(120)
def test_tampered_bundle_of_the_current_version_is_refused_naming_the_file(
    release, tmp_path: Path
) -> None:
    """It printed `1.0.0 is already installed and current` and exited 0: the short cut for an
    identical manifest came before any member was read."""
    prefix = tmp_path / "opt"
    out = cli("bundle", "install", str(release["good"]), "--prefix", str(prefix), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    binary = str(release["binary"])

    def refused(bundle: Path) -> str:
        out = cli("bundle", "install", str(bundle), "--prefix", str(prefix), cwd=tmp_path)
        assert out.returncode == 1, out.stdout + out.stderr
        assert len(out.stderr.splitlines()) == 1
        return out.stderr

    # Installed and current.
    assert binary in refused(release["bad"])
    # Installed, not current (the "switch" short cut).
    out = cli("bundle", "install", str(release["newer"]), "--prefix", str(prefix), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert binary in refused(release["bad"])
    assert (prefix / "current").readlink() == Path("versions/1.1.0")
    # Older than current: the tampered file is named, not the version policy.
    assert binary in refused(release["bad"])
    # The good bundle still switches back.
    out = cli(
        "bundle", "install", str(release["good"]), "--prefix", str(prefix), "--force", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert (prefix / "current").readlink() == Path("versions/1.0.0")
    last = json.loads((prefix / "logs" / "runyard" / "audit.jsonl").read_text().splitlines()[-2])
    assert last["result"] == "failed" and binary in last["detail"]["reason"]
