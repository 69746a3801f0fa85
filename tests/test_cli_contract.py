"""The CLI's contract in every command (issue 15): exit codes as documented (0 ok, 1 failed or
not found, 2 usage or malformed input, 3 daemon unreachable), one line on error, OS errors named
by path and cause (never "internal error"), help on every command and argument.

Most cases run `runyard.daemon.cli.main([...])` in this process (a tree on disk, no daemon),
so the whole table takes about a second.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from runyard.daemon.cli import build_parser, main
from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.own_version import runyard_version
from runyard.runtime.core.tree import RuntimeTree

RUN_ID = "20260101T000000.000000Z-0badc0de"


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with a runtime tree ``rt`` (no daemon) and a project naming it."""
    for name in ("RUNYARD_ROOT", "RUNYARD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    init_tree(RuntimeTree(tmp_path / "rt"))
    (tmp_path / "runyard.toml").write_text('root = "rt"\n')
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("a regular file: nothing can be created under it\n")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "good.json").write_text('{"n": 1}')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args: str) -> int:
    """``main(args)`` as the console script would exit (argparse's SystemExit included)."""
    try:
        return main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)


#: (argv, exit code, a piece of the one stderr line). Every command's error paths.
CASES: list[tuple[tuple[str, ...], int, str]] = [
    # 3: the daemon is unreachable, whatever the command that needs it
    (("status",), 3, "is the daemon running?"),
    (("status", "web"), 3, "is the daemon running?"),
    (("health",), 3, "is the daemon running?"),
    (("health", "--json"), 3, "is the daemon running?"),
    (("start", "web"), 3, "is the daemon running?"),
    (("stop", "--all"), 3, "is the daemon running?"),
    (("restart", "web"), 3, "is the daemon running?"),
    (("reload",), 3, "is the daemon running?"),
    (("shutdown",), 3, "is the daemon running?"),
    (("logs", "web"), 3, "is the daemon running?"),
    # 2: malformed on the command line
    (("frobnicate",), 2, "invalid choice"),
    (("start",), 2, "name a service or pass --all"),
    (("logs", "web", "-n", "-1"), 2, "-n must be >= 0"),
    (("runtime", "ensure", "web", "banana"), 2, "'banana' is not a version spec"),
    (("runtime", "gc", "--max-bytes", "lots"), 2, "is not a size"),
    (("runtime", "frobnicate"), 2, "invalid choice"),
    (("run", "heat1d", "--input", "bad.json"), 2, "not JSON"),
    (("run", "heat1d", "--input", "good.json", "--param", "novalue"), 2, "expected KEY=VALUE"),
    (("bundle", "pack", "-o", "out.rar", "--version", "1.0.0"), 2, "out.rar"),
    (("bundle", "pack", "-o", "out.tar.gz", "--version", "banana"), 2, "banana"),
    (("audit", "show", "-n", "0"), 2, "-n must be at least 1"),
    (("audit", "verify", "--anchor", "nope"), 2, "expected SEQ:SHA256"),
    (("keys", "gen"), 2, "--out"),
    (("tui", "--logs-warn", "lots"), 2, "is not a size"),
    # 1: not found, refused or failed
    (("verify", RUN_ID), 1, f"no sealed run {RUN_ID}"),
    (("verify", "no/such/dir"), 1, "no/such/dir: no such run directory"),
    (("replay", RUN_ID), 1, f"no sealed run {RUN_ID}"),
    (("runs", "--root", "nowhere"), 1, "no runtime tree at"),
    (("run", "heat1d", "--input", "missing.json"), 1, "--input missing.json: No such file"),
    (("runtime", "ls", "--root", "nowhere"), 1, "no runtime tree at"),
    (("runtime", "env", "ghost"), 1, "service 'ghost' is not installed"),
    (("runtime", "du", "--root", "nowhere"), 1, "no runtime tree at"),
    (("runtime", "verify", "--root", "nowhere"), 1, "no runtime tree at"),
    (("doctor", "--root", "nowhere"), 1, "no runtime tree at"),
    (("up", "--license", "missing.json"), 1, "--license missing.json: no such file"),
    (("license", "verify", "missing.json"), 1, "license file missing.json: no such file"),
    (("bundle", "verify", "missing.tar.gz"), 1, "missing.tar.gz"),
    (("bundle", "rollback", "--prefix", "nowhere"), 1, "nowhere"),
    (("bundle", "ls", "--prefix", "nowhere"), 1, "--prefix nowhere: no such directory"),
    (("audit", "show", "--root", "nowhere"), 1, "nowhere (no such directory)"),
    (("audit", "verify", "--root", "nowhere"), 1, "nowhere (no such directory)"),
    (("runtime", "init", "x/file/sub"), 1, "x/file/sub: Not a directory"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("argv", "code", "message"), CASES, ids=lambda v: str(v))
def test_exit_codes_as_documented_in_every_command(
    here: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], code: int, message: str
) -> None:
    assert cli(*argv) == code
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err and "internal error" not in err, err
    if code != 2:  # argparse prints its usage above its one error line
        assert len(err.strip().splitlines()) == 1, err


@pytest.mark.timeout(30)
def test_runtime_init_under_a_file_names_the_path_and_the_cause(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: ``internal error: NotADirectoryError ... (run with --debug ...)``."""
    assert cli("runtime", "init", "x/file/sub") == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"runyard: cannot create the runtime tree: {here}/x/file/sub: Not a directory"
    ), err


def test_version_prints_runyards_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("--version") == 0
    assert capsys.readouterr().out.strip() == f"runyard {runyard_version()}"


def _parsers(
    parser: argparse.ArgumentParser, path: str = "runyard"
) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out += _parsers(child, f"{path} {name}")
    return out


def test_every_subcommand_and_argument_has_help() -> None:
    """A description on every subcommand's --help and help on every argument."""
    missing = []
    for path, parser in _parsers(build_parser()):
        if not parser.description:
            missing.append(f"{path}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not choice.help:
                        missing.append(f"{path} {choice.dest}: no help in the command list")
                continue
            if not action.help or (action.help == argparse.SUPPRESS and action.dest != "help"):
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, "\n".join(missing)


@pytest.fixture
def bundle_file(here: Path) -> Path:
    """A packed runtime bundle of one service, named with no suffix that says its format."""
    from daemonkit import SLEEPER, build_tree, short_root

    tree = build_tree(short_root(), {"web": SLEEPER})
    out = here / "rt-1.0.0.bundle"
    argv = ["bundle", "pack", "-o", str(out), "--format", "tar.gz", "--version", "1.0.0"]
    assert cli(*argv, "--root", str(tree.root)) == 0
    return out


@pytest.mark.timeout(60)
def test_bundle_verify_and_install_accept_the_format_their_messages_suggest(
    here: Path, bundle_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert cli("bundle", "verify", str(bundle_file)) == 2
    assert "pass --format" in capsys.readouterr().err
    assert cli("bundle", "verify", str(bundle_file), "--format", "tar.gz") == 0
    assert cli("bundle", "verify", str(bundle_file), "--format", "zip") == 1  # it is not
    assert cli("bundle", "install", str(bundle_file), "--prefix", "p") == 2
    assert cli("bundle", "install", str(bundle_file), "--prefix", "p", "--format", "tar.gz") == 0
    assert (here / "p" / "current").is_symlink()


@pytest.mark.timeout(60)
def test_bundle_install_into_a_prefix_that_cannot_be_created_names_the_path_and_cause(
    here: Path, bundle_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    argv = ["bundle", "install", str(bundle_file), "--format", "tar.gz"]
    assert cli(*argv, "--prefix", "x/file/sub") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("runyard: cannot install into --prefix: "), err
    assert err.endswith("x/file/sub: Not a directory") or "Not a directory" in err, err
    assert "internal error" not in err


def test_run_project_is_the_deprecated_spelling_of_project_id(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --project` meant a project id while every other --project is the project file."""
    parser = build_parser()
    new = parser.parse_args(["run", "e", "--input", "f", "--project-id", "demo"])
    assert new.project_id == "demo" and new.old_project_id is None
    assert cli("run", "heat1d", "--input", "good.json", "--project", "demo") == 1
    first, *rest = capsys.readouterr().err.strip().splitlines()
    assert first.startswith("runyard: warning: run --project ID is deprecated, use --project-id")
    assert len(rest) == 1 and "heat1d" in rest[0]  # then the run's own error (not installed)
    # Review finding: with both spellings the deprecated one silently won.
    both = ("--project-id", "a", "--project", "b")
    assert cli("run", "heat1d", "--input", "good.json", *both) == 2
    assert "--project-id and the deprecated --project disagree" in capsys.readouterr().err


def test_a_broken_project_file_warns_reads_and_a_missing_one_is_still_an_error(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: a syntax error in ./runyard.toml refused every command in the directory."""
    (here / "runyard.toml").write_text('root = "rt"\n[services.web\n')
    assert cli("runtime", "ls") == 0  # the tree found from the root = line that still reads
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("runyard: warning: ") and "line 2" in err[0], err
    assert cli("runtime", "env", "web") == 1  # what needs the settings still refuses
    assert "line 2" in capsys.readouterr().err
    assert cli("runtime", "ls", "--project", "nope.toml") == 1
    assert "nope.toml: no such file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [("verify", RUN_ID), ("license", "show"), ("license", "show", "--json")],
    ids=["verify-run-id", "license-show", "license-show-json"],
)
def test_a_broken_project_file_does_not_block_these_reads_either(
    here: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    """Was: a syntax error in ./runyard.toml refused `verify RUN_ID` and `license show`."""
    good = cli(*argv)
    good_out, good_err = capsys.readouterr()
    (here / "runyard.toml").write_text('root = "rt"\n[services.web\n')
    assert cli(*argv) == good
    out, err = capsys.readouterr()
    warning, *rest = err.splitlines()
    assert warning.startswith("runyard: warning: ") and "line 2" in warning, err
    assert (out, rest) == (good_out, good_err.splitlines())
