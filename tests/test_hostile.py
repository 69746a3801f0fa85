"""Nothing half written, even when the world is hostile: a full disk, a huge or endless file
where JSON should be, a catalog host that is down, a tampered bundle of an installed version.

Each test is named after the finding it guards and failed before its fix. Everything is real:
a tmpfs mounted for the test (root only), a loopback http.server, real archives and bundles.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import CountingServer
from test_bundle_kit import bin_file, cli, make_tree, rewrite

from archives import publish, write_catalog
from runtime.bundle import pack_bundle

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


# --- 4: a tampered bundle of the installed, current version ------------------------------------


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
