"""`runyard runtime ensure | ls | remove` as mise/asdf users expect (issue 15): `1` is the newest
1.x, `ls` marks the version that runs, `remove NAME VERSION`; a catalog is remembered only after
an ensure that worked; a mistyped --root is not created by ensure.

`runyard.daemon.cli.main` in this process, on real archives and catalogs, with no daemon.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archives import publish, write_catalog
from runyard.daemon.cli import main
from runyard.runtime.acquisition.catalog import remembered_catalog
from runyard.runtime.core.manifest import init_tree, load_manifest
from runyard.runtime.core.tree import RuntimeTree

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tree ``rt`` named by ./runyard.toml, a catalog of web 1.0.0, 1.4.0, 2.0.0 and worker,
    and a second catalog with only web 3.0.0."""
    monkeypatch.delenv("RUNYARD_ROOT", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    repo = tmp_path / "repo"
    repo.mkdir()
    records = [publish(repo, "web", v) for v in ("1.0.0", "1.4.0", "2.0.0")]
    write_catalog(repo / "catalog.json", [*records, publish(repo, "worker", "0.3.0")])
    other = tmp_path / "other"
    other.mkdir()
    write_catalog(other / "catalog.json", [publish(other, "web", "3.0.0")])
    init_tree(RuntimeTree(tmp_path / "rt"))
    (tmp_path / "runyard.toml").write_text('root = "rt"\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args: str) -> int:
    try:
        return main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)


def installed(here: Path) -> list[tuple[str, str]]:
    return sorted((s.name, s.version) for s in load_manifest(RuntimeTree(here / "rt")).services)


def test_a_partial_version_spec_ensures_the_newest_of_its_series(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: `ensure web 1` installed 1.0.0 (`1` read as exactly 1.0.0)."""
    assert cli("runtime", "ensure", "web", "1", "--catalog", "repo/catalog.json", "--json") == 0
    assert json.loads(capsys.readouterr().out)["version"] == "1.4.0"


def _marked(out: str) -> list[tuple[str, str]]:
    return [
        (line.split()[0].lstrip("*"), line.split()[1])
        for line in out.splitlines()
        if line.startswith("*") and not line.startswith("* ")
    ]


def test_runtime_ls_marks_the_version_the_project_pin_runs(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: `*` marked the version ensured last even when runyard.toml pins another."""
    assert cli("runtime", "ensure", "web", "1.4.0", "--catalog", "repo/catalog.json") == 0
    assert cli("runtime", "ensure", "web", "2.0.0") == 0
    capsys.readouterr()
    assert cli("runtime", "ls") == 0
    assert _marked(capsys.readouterr().out) == [("web", "2.0.0")]  # no pin: ensured last
    (here / "runyard.toml").write_text('root = "rt"\n[services.web]\nversion = "1"\n')
    assert cli("runtime", "ls") == 0
    assert _marked(capsys.readouterr().out) == [("web", "1.4.0")]


def test_runtime_remove_removes_one_version_and_names_what_is_installed(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("runtime", "ensure", "web", "1.0.0", "--catalog", "repo/catalog.json") == 0
    assert cli("runtime", "ensure", "web", "2.0.0") == 0
    capsys.readouterr()
    assert cli("runtime", "remove", "web", "1.0.0") == 0
    assert capsys.readouterr().out.startswith("removed web 1.0.0 (")
    assert installed(here) == [("web", "2.0.0")]
    assert not (here / "rt" / "bin" / "web" / "1.0.0").exists()
    assert (here / "rt" / "bin" / "web" / "2.0.0").is_dir()
    assert cli("runtime", "remove", "web", "1.0.0") == 1
    err = capsys.readouterr().err.strip()
    assert err == "runyard: web 1.0.0 is not installed (installed versions: 2.0.0)", err
    assert cli("runtime", "remove", "web") == 2  # VERSION is required


def test_a_catalog_is_remembered_only_after_a_successful_ensure(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: a catalog that resolved nothing replaced the remembered one all the same."""
    assert cli("runtime", "ensure", "web", "1", "--catalog", "repo/catalog.json") == 0
    good = remembered_catalog(RuntimeTree(here / "rt"))
    assert cli("runtime", "ensure", "worker", "--catalog", "other/catalog.json") == 1
    assert remembered_catalog(RuntimeTree(here / "rt")) == good
    assert cli("runtime", "ensure", "worker") == 0  # from the catalog that worked


def test_a_mistyped_root_is_not_created_by_ensure(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: `ensure --root rtt` laid out a new tree rtt/ and installed into it."""
    assert cli("runtime", "ensure", "web", "--root", "rtt", "--catalog", "repo/catalog.json") == 1
    assert "no runtime tree at" in capsys.readouterr().err
    assert not (here / "rtt").exists()
