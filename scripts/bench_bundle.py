"""Benchmark `bundle`: runtime bundle pack and install against plain `tar czf` / `tar xzf`.

The tree (built once, cached under .bench/) is a real runtime tree of 200 MB (--quick: 20 MB):
6 services, each with one big binary (half incompressible random bytes, half compressible
text-like data) that together make 60% of the bytes, and many small files of 0.5-16 KiB (the
other 40%, about 10,000 of them at full size) spread over lib/ and share/ dirs of their install
dirs and their config/; the manifest records every file's sha256, as acquisition would. All
from random.Random(SEED), so every build is the same tree.

Contenders, in turn (the order rotating each round) for --runs rounds after a warm-up round:

    pack tar.gz      runyard.bundle.pack_bundle (hash + secret scan + deterministic tar.gz),
                     gzip level 6, the default, as `tar czf` (gzip -6)
    tar czf          GNU tar czf of the same members (manifest.json bin config schemas)
    pack tar.gz -1   the same at level 1 (informational: --compress-level 1)
    pack zip         pack_bundle to zip (informational: zip stores incompressible files)
    install tar.gz   install_bundle into a fresh prefix (stream, check every sha256, fsync
                     every file, switch `current`)
    tar xzf          GNU tar xzf of the `tar czf` archive into a fresh dir (no fsync)
    tar xzf + sync   the same, then `sync` (what durability costs tar; informational)

Targets, on medians: pack tar.gz <= 1.5x tar czf, install <= 1.5x tar xzf (judged on the
full tree only: at 20 MB, per-file costs and the noise of a shared box decide). Packing also
hashes and scans every byte (before writing, so a refusal writes nothing); installing hashes
every byte and fsyncs every file before the switch, which tar does not do: the `tar xzf +
sync` row shows what that part costs.
"""

from __future__ import annotations

import hashlib
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

from runyard.runtime.acquisition.drift import verify_installed
from runyard.runtime.bundle import install_bundle, pack_bundle
from runyard.runtime.core.manifest import RuntimeManifest, ServiceEntry, save_manifest
from runyard.runtime.core.platform import current_arch, current_os
from runyard.runtime.core.tree import RuntimeTree

SEED = 20240917
FULL_BYTES = 200 * 1000 * 1000
QUICK_BYTES = 20 * 1000 * 1000
SERVICES = 6
TARGET_PACK = 1.5
TARGET_INSTALL = 1.5
#: Bump when the tree layout changes, so stale cached trees are rebuilt.
LAYOUT_VERSION = 2
_WORDS = [
    b"alpha", b"beta", b"gamma", b"delta", b"epsilon", b"zeta", b"eta", b"theta", b"iota",
    b"kappa", b"lambda", b"mu", b"runtime", b"service", b"config", b"\x00\x00\x00\x01",
    b"\x7fELF", b"GLIBC_2.17", b"libc.so.6", b"__cxa_finalize", b"{\n  \"key\": 1\n}",
]  # fmt: skip


def _texty(rnd: random.Random, size: int) -> bytes:
    """Compressible bytes with some entropy: like code, tables and text in a real binary."""
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(_WORDS)
        out += rnd.randbytes(rnd.randint(0, 3))
        out += b" " if rnd.random() < 0.8 else b"\n"
    return bytes(out[:size])


def build_tree(base: Path, total: int, seed: int = SEED) -> RuntimeTree:
    """The benchmark tree under ``base``/runtime, built once."""
    tree = RuntimeTree(base / "runtime")
    stamp = f"{total} {seed} {LAYOUT_VERSION}"
    build_once(base, f"a {total / 1e6:.0f} MB tree", stamp, lambda: _fill_tree(tree, total, seed))
    return tree


def _fill_tree(tree: RuntimeTree, total: int, seed: int) -> None:
    rnd = random.Random(seed)
    tree.init()
    os_name, arch = current_os(), current_arch()
    big_each = int(total * 0.6) // SERVICES
    small_total = total - big_each * SERVICES
    entries = []
    for i in range(SERVICES):
        name = f"svc{i}"
        install = tree.install_dir(name, "1.0.0", os_name, arch)
        files: dict[str, str] = {}

        def put(rel: str, data: bytes, mode: int = 0o644, install: Path = install) -> str:
            path = install / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.chmod(path, mode)
            return hashlib.sha256(data).hexdigest()

        half = big_each // 2
        files[f"bin/{name}"] = put(
            f"bin/{name}", rnd.randbytes(half) + _texty(rnd, big_each - half), 0o755
        )
        budget = small_total // SERVICES
        n = 0
        while budget > 0:
            size = min(budget, rnd.randint(512, 16 * 1024))
            budget -= size
            if rnd.random() < 0.1:
                conf = tree.config_dir / name / f"d{n % 7}" / f"c{n}.txt"
                conf.parent.mkdir(parents=True, exist_ok=True)
                # Config is scanned for secret-named values: `"key": 1` would be one.
                conf.write_bytes(_texty(rnd, size).replace(b'"key"', b'"len"'))
            else:
                rel = f"{rnd.choice(['lib', 'share', 'lib/python'])}/m{n % 23}/f{n}.dat"
                files[rel] = put(rel, _texty(rnd, size))
            n += 1
        entries.append(
            ServiceEntry(
                name=name,
                version="1.0.0",
                os=os_name,
                arch=arch,
                checksum=hashlib.sha256(name.encode()).hexdigest(),
                size=big_each,
                bin_path=f"bin/{name}/1.0.0/{os_name}-{arch}/bin/{name}",
                installed_at="2024-09-17T00:00:00.000000Z",
                files=files,
            )
        )
    save_manifest(tree, RuntimeManifest(services=entries))


def run(opts: Any) -> bool:
    tar = shutil.which("tar")
    if (
        tar is None
        or "GNU tar"
        not in subprocess.run([tar, "--version"], capture_output=True, text=True).stdout
    ):
        print("FAIL: GNU tar is not installed")
        return False
    total = QUICK_BYTES if opts.quick else FULL_BYTES
    base = Path(opts.repo) / ".bench" / f"bundle-{total}-s{SEED}-v{LAYOUT_VERSION}"
    if opts.rebuild and base.exists():
        shutil.rmtree(base)
    tree = build_tree(base, total)
    scratch = base / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    nfiles = sum(len(files) for _, _, files in os.walk(tree.root))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"  tree {tree.root}: {total / 1e6:.0f} MB in {nfiles:,} files; python "
        f"{platform.python_version()}, {cores} cores, load {os.getloadavg()[0]:.2f}, runs {opts.runs}"
    )
    os.environ.pop("SOURCE_DATE_EPOCH", None)
    # tar gets exactly the bundle's top-level members (the schemas dir is copied in for it).
    shutil.copytree(
        Path(__file__).resolve().parent.parent / "schemas",
        tree.root / "schemas",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("*.py", "__pycache__"),
    )
    members = ["manifest.json", "bin", "config", "schemas"]
    bundle_tgz, bundle_zip, plain = (
        scratch / "rt.tar.gz",
        scratch / "rt.zip",
        scratch / "plain.tar.gz",
    )
    fast = scratch / "rt-1.tar.gz"
    digests: dict[str, set[str]] = {"tar.gz": set(), "zip": set()}
    counter = iter(range(1_000_000))

    def pack(fmt: str, out: Path, level: int = 6) -> None:
        result = pack_bundle(tree, out, version="1.0.0", level=level)
        if level == 6:
            digests[fmt].add(result.sha256)

    def tar_czf() -> None:
        subprocess.run([tar, "czf", str(plain), "-C", str(tree.root), *members], check=True)

    def fresh() -> Path:
        return scratch / f"x{next(counter)}"

    def install() -> Callable[[], None]:
        prefix = fresh()
        install_bundle(bundle_tgz, prefix)
        return lambda: shutil.rmtree(prefix)

    def tar_xzf(sync: bool = False) -> Callable[[], None]:
        target = fresh()
        target.mkdir()
        subprocess.run([tar, "xzf", str(plain), "-C", str(target)], check=True)
        if sync:
            os.sync()
        return lambda: shutil.rmtree(target)

    pack("tar.gz", bundle_tgz)
    tar_czf()
    ok = True
    probe = fresh()
    install_bundle(bundle_tgz, probe)
    report = verify_installed(RuntimeTree(probe / "current"))
    shutil.rmtree(probe)
    checks = [("an installed bundle verifies against its manifest", report.ok)]
    contenders: dict[str, Callable[[], Any]] = {
        "pack tar.gz": lambda: pack("tar.gz", bundle_tgz),
        "tar czf": tar_czf,
        "pack tar.gz -1": lambda: pack("tar.gz", fast, level=1),
        "pack zip": lambda: pack("zip", bundle_zip),
        "install tar.gz": install,
        "tar xzf": tar_xzf,
        "tar xzf + sync": lambda: tar_xzf(sync=True),
    }
    times = time_rounds(contenders, opts.runs)
    checks.append(("every tar.gz pack has the same sha256", len(digests["tar.gz"]) == 1))
    checks.append(("every zip pack has the same sha256", len(digests["zip"]) == 1))
    for what, good in checks:
        ok &= good
        print(f"  check {'ok  ' if good else 'FAIL'} {what}")
    sizes = {
        "pack tar.gz": bundle_tgz.stat().st_size,
        "tar czf": plain.stat().st_size,
        "pack tar.gz -1": fast.stat().st_size,
        "pack zip": bundle_zip.stat().st_size,
    }
    med = {name: statistics.median(spent) for name, spent in times.items()}
    print(
        f"  {'contender':16} {'median s':>9} {'min s':>7} {'MB/s':>7} {'vs tar':>7} {'output MB':>10}"
    )
    for name, spent in times.items():
        ref = med["tar czf"] if name.startswith(("pack", "tar czf")) else med["tar xzf"]
        out = f"{sizes[name] / 1e6:10.1f}" if name in sizes else ""
        print(
            f"  {name:16} {med[name]:9.2f} {min(spent):7.2f} {total / med[name] / 1e6:7.0f} "
            f"{med[name] / ref:7.2f} {out}"
        )
    pack_ratio = med["pack tar.gz"] / med["tar czf"]
    install_ratio = med["install tar.gz"] / med["tar xzf"]
    judged = f"targets <= {TARGET_PACK} and <= {TARGET_INSTALL}"
    if opts.quick:
        verdict = ok
        judged += f" are for {FULL_BYTES // 1_000_000} MB: not judged with --quick"
    else:
        verdict = ok and pack_ratio <= TARGET_PACK and install_ratio <= TARGET_INSTALL
    print(
        f"  {'PASS' if verdict else 'FAIL'}: pack / tar czf = {pack_ratio:.2f}, "
        f"install / tar xzf = {install_ratio:.2f} ({judged})" + ("" if ok else "; a check failed")
    )
    print(f"  loadavg after: {os.getloadavg()[0]:.2f}")
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(tree.root / "schemas", ignore_errors=True)
    return verdict
