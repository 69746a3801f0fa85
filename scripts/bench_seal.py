"""Benchmark `seal`: sealing a run's artifacts against plain hashlib.sha256 over the same bytes.

A runtime tree (built once, cached under .bench/) holds an engine `sealbench`, installed from
an archive and catalog like the tests' engines, whose run copies every file of the directory
named by inputs.source into $RUNYARD_ARTIFACTS_DIR. Two sources hold the same 100 MiB of
random.Random(SEED) bytes: `one` (one 100 MiB file) and `many` (100 x 1 MiB); --quick: 10 MiB.

Each round runs execute_and_seal (unsigned) and times, by wrapping them in runtime.runs.run
(no code changed), `_seal` (the sealing work: RUN_META/RUN_CONDITIONS, moving the outputs in,
writing the run and definition files, hashing + fsyncing every artifact, ARTIFACT_INDEX.json,
SHA256SUMS.txt, the directory fsyncs, chmod, the rename into runs/) and, within it,
`seal_run`. Then plain hashlib.sha256 reads the run directory's artifacts (page cache, 1 MiB
reads, one thread) and its digests are checked against ARTIFACT_INDEX.json; the run directory
is deleted. The artifacts were just written by the engine, so the seal's fsync writes them out:
the disk is part of the measurement, as it is of a real seal. Round 0 warms up and is not kept.
Target: seal throughput >= 60% of plain sha256 (medians) for each layout, full size.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchkit import build_once

SEED = 20240601
MIB = 1024 * 1024
FULL_MIB = 100
QUICK_MIB = 10
TARGET = 0.60
ENGINE = "sealbench"
#: Bump when the fixture changes, so stale cached trees are rebuilt.
LAYOUT_VERSION = 1

ENGINE_PROGRAM = """\
import json, os, shutil, sys
src = json.loads(sys.stdin.buffer.read())["inputs"]["source"]
arts = os.environ["RUNYARD_ARTIFACTS_DIR"]
names = sorted(os.listdir(src))
for name in names:
    shutil.copyfile(os.path.join(src, name), os.path.join(arts, name))
size = sum(os.path.getsize(os.path.join(arts, n)) for n in names)
sys.stdout.write(json.dumps({"outputs": {"files": len(names), "bytes": size}, "metrics": {}}))
"""

DEFINITIONS = {
    "ENGINE_MANIFEST.json": {
        "engine_code": "SEALBENCH",
        "engine_version": "1.0.0",
        "description": "benchmark engine: copies inputs.source into its artifacts",
        "requires_input_artifacts": False,
    },
    "INPUT_SCHEMA.json": {
        "type": "object",
        "properties": {
            "inputs": {
                "type": "object",
                "required": ["source"],
                "properties": {"source": {"type": "string"}},
            }
        },
    },
    "OUTPUT_SCHEMA.json": {"type": "object"},
    "COUPLING_RULES.json": {"accepts": []},
}


def build_fixture(base: Path, mib: int) -> Path:
    """The runtime tree (engine installed) and sources one/ and many/ under ``base``, once."""
    root = base / "runtime"
    stamp = f"{mib} {SEED} {LAYOUT_VERSION}"
    build_once(base, f"{mib} MiB x 2 layouts and a tree", stamp, lambda: _fill(base, root, mib))
    return root


def _fill(base: Path, root: Path, mib: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from archives import archive_record, make_tar, write_catalog
    from runyard.runtime.acquisition.ensure import ensure_service

    data = random.Random(SEED).randbytes(mib * MIB)
    (base / "source" / "one").mkdir(parents=True)
    (base / "source" / "many").mkdir()
    (base / "source" / "one" / "data.bin").write_bytes(data)
    for i in range(mib):
        (base / "source" / "many" / f"part-{i:03d}.bin").write_bytes(data[i * MIB : (i + 1) * MIB])
    files = {f"bin/{ENGINE}": f"#!{sys.executable}\n{ENGINE_PROGRAM}".encode()}
    for name, doc in DEFINITIONS.items():
        files[f"definitions/{name}"] = json.dumps(doc, indent=2).encode()
    for name in ("SEALING_SPEC.md", "ENGINE_GOVERNANCE.md", "PHYSICS_CAPABILITIES.md"):
        files[f"definitions/{name}"] = f"# {name} of the benchmark engine\n".encode()
    (base / "archives").mkdir()
    archive = make_tar(base / "archives" / f"{ENGINE}-1.0.0.tar.gz", files)
    record = archive_record(archive, ENGINE, "1.0.0", kind="engine")
    catalog = write_catalog(base / "archives" / "catalog.json", [record])
    ensure_service(ENGINE, root=root, catalog=str(catalog), progress=False)


def plain_sha256(paths: list[Path]) -> dict[str, str]:
    """hashlib.sha256 of each file, read in 1 MiB chunks on this thread."""
    buf = bytearray(MIB)
    view = memoryview(buf)
    out = {}
    for path in paths:
        h = hashlib.sha256()
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                h.update(view[:n])
        out[path.name] = h.hexdigest()
    return out


def timed(spent: list[float], func: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - started)

    return wrapper


def bench_layout(tree: Any, source: Path, size: int, runs: int) -> tuple[bool, float]:
    """Time ``runs`` sealed runs copying ``source``; (digests all matched, ratio)."""
    import runyard.runtime.runs.run as run_module

    times: dict[str, list[float]] = {k: [] for k in ("plain", "seal", "seal_run", "whole")}
    real = run_module._seal, run_module.seal_run
    run_module._seal = timed(times["seal"], real[0])
    run_module.seal_run = timed(times["seal_run"], real[1])
    same = True
    try:
        for _ in range(runs + 1):  # round 0 warms up and is dropped below
            started = time.perf_counter()
            result = run_module.execute_and_seal(tree, ENGINE, {"source": str(source)})
            times["whole"].append(time.perf_counter() - started)
            run_dir = Path(result.run_dir)
            arts = sorted((run_dir / "artifacts").iterdir())
            started = time.perf_counter()
            digests = plain_sha256(arts)
            times["plain"].append(time.perf_counter() - started)
            index = json.loads((run_dir / "ARTIFACT_INDEX.json").read_bytes())["files"]
            sealed = {e["path"].removeprefix("artifacts/"): e["sha256"] for e in index}
            same &= (
                digests.items() <= sealed.items() and sum(p.stat().st_size for p in arts) == size
            )
            shutil.rmtree(run_dir)
    finally:
        run_module._seal, run_module.seal_run = real
    times = {key: spent[1:] for key, spent in times.items()}
    rows = {
        "plain hashlib.sha256 (page cache)": "plain",
        "seal (run._seal)": "seal",
        "  of which seal_run": "seal_run",
        "execute_and_seal (engine copy too)": "whole",
    }
    print(f"    {'contender':36} {'median ms':>10} {'min ms':>8} {'MiB/s':>7}")
    for label, key in rows.items():
        median = statistics.median(times[key])
        print(
            f"    {label:36} {median * 1e3:10.1f} {min(times[key]) * 1e3:8.1f} "
            f"{size / MIB / median:7.0f}"
        )
    ratio = statistics.median(times["plain"]) / statistics.median(times["seal"])
    return same, ratio


def run(opts: Any) -> bool:
    from runyard.runtime.core.tree import RuntimeTree

    mib = QUICK_MIB if opts.quick else FULL_MIB
    base = Path(opts.repo) / ".bench" / f"seal-{mib}-s{SEED}-v{LAYOUT_VERSION}"
    if opts.rebuild and base.exists():
        shutil.rmtree(base)
    tree = RuntimeTree(build_fixture(base, mib))
    for leftover in ("runs", "rejected"):  # from an interrupted run: keep disk use bounded
        shutil.rmtree(tree.data_dir / ENGINE / leftover, ignore_errors=True)
    cores = len(os.sched_getaffinity(0))
    print(
        f"  tree {tree.root}; python {platform.python_version()}, {cores} cores, "
        f"load {os.getloadavg()[0]:.2f}, runs {opts.runs}"
    )
    verdict = True
    for layout, what in (("one", f"1 x {mib} MiB"), ("many", f"{mib} x 1 MiB")):
        print(f"  [{layout}] {what} of artifacts")
        same, ratio = bench_layout(tree, base / "source" / layout, mib * MIB, opts.runs)
        if opts.quick:
            ok = same
            judged = f"target >= {TARGET:.0%} is for {FULL_MIB} MiB: not judged with --quick"
        else:
            ok = same and ratio >= TARGET
            judged = f"target >= {TARGET:.0%}"
        verdict &= ok
        print(
            f"  {'PASS' if ok else 'FAIL'} [{layout}]: seal at {ratio:.0%} of plain sha256 "
            f"throughput ({judged}){'' if same else '; DIGESTS DIFFER from ARTIFACT_INDEX'}"
        )
    print(f"  loadavg after: {os.getloadavg()[0]:.2f}")
    return verdict
