"""Benchmark `du`: runtime.du against GNU `du -sb` on the same runtime tree, warm cache.

The tree (built once, cached under .bench/) holds exactly N non-directory entries: ~20
services x bin/data/logs/config, each in a few nested directories, files of 0-4 KiB, all
from random.Random(SEED); plus what a real tree has: manifest.json, cache archives and
index.json, Runyard's own logs/runyard and config/runyard, a `current` symlink per service.
No hard links, so the byte totals can be checked against `find` and `du -sb` exactly.

Contenders run in turn (the order rotating each round) for --runs rounds after one warm-up
round; the table shows medians and minimums, and the ratio of medians to `du -sb`. `du` is
timed as a subprocess, so its row includes a fork+exec, shown on its own as `du -sb (empty
dir)`. Target: disk_usage no slower than 1.5x `du -sb`.
"""

from __future__ import annotations

import os
import platform
import random
import shutil
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchkit import build_once, time_rounds

from runyard.runtime.core.du import Usage, disk_usage, scan_usage
from runyard.runtime.core.tree import RuntimeTree

SEED = 20240601
SERVICES = 20
FULL_FILES = 100_000
QUICK_FILES = 10_000
TARGET = 1.5
#: Bump when the tree layout changes, so stale cached trees are rebuilt.
LAYOUT_VERSION = 1


def build_tree(base: Path, nfiles: int, seed: int = SEED) -> RuntimeTree:
    """A runtime tree with exactly ``nfiles`` non-directories, built once under ``base``."""
    tree = RuntimeTree(base / "runtime")
    stamp = f"{nfiles} {seed} {LAYOUT_VERSION}"
    build_once(base, f"{nfiles:,} files", stamp, lambda: _fill_tree(tree, nfiles, seed))
    return tree


def _fill_tree(tree: RuntimeTree, nfiles: int, seed: int) -> None:
    rnd = random.Random(seed)
    tree.init()
    extras = 0

    def write(path: Path, size: int) -> None:
        nonlocal extras
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        extras += 1

    services = [f"svc{i:02d}" for i in range(SERVICES)]
    write(tree.cache_index_path, 2048)
    write(tree.logs_dir / "runyard" / "runyard.log", 40_000)
    write(tree.config_dir / "runyard" / "catalog.toml", 900)
    for name in services[:3]:
        write(tree.archives_dir / f"{name}-1.0.0-linux-amd64-0123456789ab.tar.gz", 150_000)
    dirs: list[Path] = []
    for name in services:
        version = f"{rnd.randint(1, 9)}.{rnd.randint(0, 20)}.{rnd.randint(0, 9)}"
        bases = {
            "bin": tree.install_dir(name, version, "linux", "amd64"),
            "data": tree.data_dir / name,
            "logs": tree.logs_dir / name,
            "config": tree.config_dir / name,
        }
        bases["bin"].mkdir(parents=True)
        (tree.bin_dir / name / "current").symlink_to(version)
        extras += 1
        for top in bases.values():
            pool = [top]
            for i in range(rnd.randint(8, 24)):
                parent = rnd.choice(pool)
                if len(parent.relative_to(top).parts) >= 4:
                    parent = top
                pool.append(parent / f"d{i}")
            dirs.extend(pool)
    extras += 1  # manifest.json, written by init()
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for i in range(nfiles - extras):
        (rnd.choice(dirs) / f"f{i}.dat").write_bytes(b"x" * rnd.randint(0, 4096))


def gnu_du() -> str | None:
    du = shutil.which("du")
    if not du:
        return None
    out = subprocess.run([du, "--version"], capture_output=True, text=True).stdout
    return du if "GNU coreutils" in out else None


def find_sizes(root: Path, kind: str) -> tuple[int, int]:
    """(sum of st_size, count) of entries matching `find -type`/`! -type d` expression."""
    expr = ["!", "-type", "d"] if kind == "files" else ["-type", "d"]
    out = subprocess.run(
        ["find", str(root), *expr, "-printf", "%s\n"], capture_output=True, text=True, check=True
    ).stdout.split()
    return sum(map(int, out)), len(out)


def du_bytes(du: str, root: Path) -> int:
    out = subprocess.run([du, "-sb", str(root)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def check_totals(du: str, tree: RuntimeTree, nfiles: int) -> bool:
    """Our totals against find (files only) and `du -sb` minus the directories' own sizes."""
    report = disk_usage(tree)
    raw = scan_usage(tree.root)
    serial = disk_usage(tree, parallel=False)
    files_bytes, files = find_sizes(tree.root, "files")
    dirs_bytes, _ = find_sizes(tree.root, "dirs")
    du_files_bytes = du_bytes(du, tree.root) - dirs_bytes
    checks = [
        ("disk_usage total == find ! -type d (bytes)", report.total.bytes, files_bytes),
        ("disk_usage total == find ! -type d (count)", report.total.files, files),
        ("files in the tree == N", files, nfiles),
        ("du -sb - dir sizes == disk_usage total", du_files_bytes, report.total.bytes),
        ("scan_usage(root) == disk_usage total", raw, report.total),
        ("parallel=False gives the same report", serial, report),
    ]
    ok = True
    for what, got, want in checks:
        good = got == want
        ok &= good
        if isinstance(got, int):
            shown = f"{got:,}" if good else f"{got:,} != {want:,}"
        elif isinstance(got, Usage):
            shown = f"{got.bytes:,} B in {got.files:,} files" + ("" if good else f" != {want}")
        else:
            shown = "same" if good else "differs"
        print(f"  check {'ok  ' if good else 'FAIL'} {what}: {shown}")
    return ok


def run(opts: Any) -> bool:
    du = gnu_du()
    if du is None:
        print("FAIL: GNU du (coreutils) is not installed")
        return False
    nfiles = QUICK_FILES if opts.quick else FULL_FILES
    base = Path(opts.repo) / ".bench" / f"du-{nfiles}-s{SEED}-v{LAYOUT_VERSION}"
    if opts.rebuild and base.exists():
        shutil.rmtree(base)
    tree = build_tree(base, nfiles)
    root = str(tree.root)
    empty = base / "empty"
    empty.mkdir(exist_ok=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"  tree {root}: {nfiles:,} files; python {platform.python_version()}, "
        f"{cores} cores, load {os.getloadavg()[0]:.2f}, runs {opts.runs}"
    )
    ok = check_totals(du, tree, nfiles)

    def run_du(path: str = root) -> None:
        subprocess.run([du, "-sb", path], stdout=subprocess.DEVNULL, check=True)

    contenders: dict[str, Callable[[], Any]] = {
        "du -sb": run_du,
        "disk_usage": lambda: disk_usage(tree),
        "scan_usage(root)": lambda: scan_usage(root),
        "disk_usage parallel=False": lambda: disk_usage(tree, parallel=False),
        "du -sb (empty dir)": lambda: run_du(str(empty)),
    }
    times = time_rounds(contenders, opts.runs)
    base_median = statistics.median(times["du -sb"])
    print(f"  {'contender':28} {'median ms':>10} {'min ms':>8} {'vs du':>6}")
    for name, spent in times.items():
        median = statistics.median(spent)
        print(
            f"  {name:28} {median * 1e3:10.1f} {min(spent) * 1e3:8.1f} {median / base_median:6.2f}"
        )
    ratio = statistics.median(times["disk_usage"]) / base_median
    if opts.quick:
        # 10,000 files take du ~25 ms, about what starting the helper costs: the target is
        # for the full tree, so a quick run judges only the totals.
        verdict = ok
        judged = f"target <= {TARGET} is for {FULL_FILES:,} files: not judged with --quick"
    else:
        verdict = ok and ratio <= TARGET
        judged = f"target <= {TARGET}"
    print(
        f"  {'PASS' if verdict else 'FAIL'}: disk_usage / du -sb = {ratio:.2f} "
        f"({judged}){'' if ok else '; totals disagree'}"
    )
    print(f"  loadavg after: {os.getloadavg()[0]:.2f}")
    return verdict
