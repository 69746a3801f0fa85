"""Releases and boxes for the fleet tests (tests/test_ansible_fleet.py, test_bundle_reload.py).

A *release* is a real runtime tree with one service, ``web``, installed through acquisition
(tests/daemonkit.build_tree), whose program prints ``web VERSION up, ready`` (or ``... up,
warming`` for a release that never becomes ready) and whose ``config/web/service.toml`` makes
the line ``ready`` its readiness (a log probe): packed and signed with the library, as
``runyard bundle pack --sign`` does. A *box* is a prefix with bundles installed into it and a
real daemon running on ``PREFIX/current``, as a systemd unit from ``runyard service install``
would run it.
"""

from __future__ import annotations

import os
from pathlib import Path

from daemonkit import Daemon, build_tree, remove_tree_cgroups, wait_for
from test_bundle_kit import service_source

from runyard.protocol.client import Client, DaemonUnreachable
from runyard.runtime.bundle import install_bundle, pack_bundle
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.signing.keys import generate_signing_key

READINESS = '[readiness]\nkind = "log"\npattern = "ready"\ninterval = 0.2\n'


def release_key(base: Path) -> tuple[Path, Path]:
    """(private, public) Ed25519 key files of a release key under ``base``."""
    files = generate_signing_key(base / "release")
    return files.private, files.public


def release(base: Path, version: str, key: Path, *, ready: bool = True) -> Path:
    """A signed bundle ``rt-VERSION.tar.gz`` under ``base`` whose web says ``ready`` or not."""
    word = "ready" if ready else "warming"
    source = service_source("web", version).replace(' up"', f' up, {word}"')
    tree = build_tree(base / f"src-{version}" / "rt", {"web": source})
    (tree.config_dir / "web").mkdir(parents=True, exist_ok=True)
    (tree.config_dir / "web" / "service.toml").write_text(READINESS)
    out = base / f"rt-{version}.tar.gz"
    pack_bundle(tree, out, sign_key=key, version=version, created_at="2026-01-01T00:00:00Z")
    return out


class Box:
    """One prefix and the daemon running on its ``current``."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.current = prefix / "current"
        self.daemon: Daemon | None = None

    def install(self, bundle: Path, pubkey: Path) -> None:
        install_bundle(bundle, self.prefix, pubkey=pubkey)

    def start(self) -> Box:
        # daemonkit.Daemon runs `runyard daemon --root ROOT --project ROOT/../runyard.toml`.
        (self.prefix / "runyard.toml").write_text('root = "current"\n')
        self.daemon = Daemon(RuntimeTree(self.current)).start()
        wait_for(self.healthy, 30, f"web ready on {self.prefix}")
        return self

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        # The daemon names its cgroup after realpath(root), the version current when it
        # started: after a switch, Daemon.stop looks under the new one only.
        for version in (self.prefix / "versions").glob("*"):
            remove_tree_cgroups(version)

    def version(self) -> str:
        """The version ``current`` points at."""
        return os.readlink(self.current).removeprefix("versions/")

    def healthy(self) -> bool:
        """What `runyard health` says: every autostart service running and not unready."""
        try:
            with Client(self.current, timeout=2.0) as client:
                services = client.status().services
        except DaemonUnreachable:
            return False
        return bool(services) and all(
            s.state == "running" and s.ready is not False for s in services if s.autostart
        )

    def said(self, text: str) -> bool:
        """Whether web's captured output has a line containing ``text``."""
        logs = self.prefix / "logs" / "web"
        return any(text in p.read_text(errors="replace") for p in logs.glob("*") if p.is_file())


__all__ = ["READINESS", "Box", "release", "release_key"]
