"""Every state-changing action is recorded once in the audit trail, whichever way it came.

Finding (issue 11): ``runyard runtime ensure`` through the CLI left no entry (only the daemon's
dispatch recorded an ensure), and ``runyard run`` through the daemon left two (the daemon's
``run`` and the library's ``run.sealed``). Actions now record themselves through one writer,
runtime/ops/audit_action.py; the daemon writes a request's entry only when nothing inside did.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import CountingServer
from daemonkit import SLEEPER, build_tree, runyard_env, wait_for
from test_runs_kit import SAMPLE, build_catalogs

from archives import publish, write_catalog
from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.ops import audit

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in runyard_env().items() if not k.startswith("RUNYARD_")}
    env["XDG_CONFIG_HOME"] = str(cwd / "xdg")  # the user's env.toml stays out of the engines
    return subprocess.run(
        [sys.executable, "-m", "runyard.daemon", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def entries(logs: Path) -> list[dict]:
    path = audit.audit_path(logs)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def acted(found: list[dict]) -> list[tuple[str, str, str]]:
    return [(e["action"], e["target"], e["result"]) for e in found]


@pytest.mark.timeout(120)
def test_runtime_ensure_through_the_cli_is_recorded_exactly_once(tmp_path: Path, http_dir) -> None:
    served, server = http_dir
    write_catalog(served / "catalog.json", [publish(served, "hello", "1.0.0")])
    url = f"{server.url}/catalog.json"
    root = tmp_path / "rt"
    logs = root / "logs"
    init_tree(RuntimeTree(root))  # not `runtime init`: its own entry is not this test's

    out = cli("runtime", "ensure", "hello", "--catalog", url, "--root", str(root), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (entry,) = entries(logs)
    assert acted([entry]) == [("ensure", "hello", "ok")]
    assert entry["actor"] == {"uid": os.getuid(), "client": "cli"}
    assert entry["detail"]["version"] == "1.0.0"
    assert entry["detail"]["installed"] is True
    assert entry["detail"]["catalog"] == url

    # Already installed: still one entry for the one command (nothing fetched).
    again = cli("runtime", "ensure", "hello", "1.0.0", "--root", str(root), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert acted(entries(logs)[1:]) == [("ensure", "hello", "ok")]
    assert entries(logs)[1]["detail"]["installed"] is False

    # Refused: one entry with the refusal, and the one error line the user sees.
    refused = cli("runtime", "ensure", "nope", "--root", str(root), cwd=tmp_path)
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1, refused.stderr
    (last,) = entries(logs)[2:]
    assert acted([last]) == [("ensure", "nope", "failed")]
    assert last["detail"]["error"] in refused.stderr
    assert audit.verify_chain(audit.audit_path(logs)).ok


@dataclass
class Row:
    """One command of the table and the entries it must leave (action, target prefix, result)."""

    name: str
    run: Callable[[], None]
    want: list[tuple[str, str, str]]
    #: Where the entries go (a bundle prefix has a log of its own); None: the tree's.
    logs: Path | None = None
    check: Callable[[list[dict]], None] = field(default=lambda found: None)


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return build_catalogs(tmp_path_factory)


@pytest.mark.timeout(600)
def test_each_state_changing_cli_command_leaves_exactly_one_record(
    root: Path, daemons, catalogs
) -> None:
    work = root.parent
    tree = build_tree(root, {"web": SLEEPER})
    dist = Path(catalogs["examples"]).parent
    server = CountingServer(dist)
    url = f"{server.url}/catalog.json"
    prefix = work / "prefix"
    inputs = work / "inputs.json"
    inputs.write_text(json.dumps(SAMPLE["inputs"]))
    params = [f"--param={k}={json.dumps(v)}" for k, v in SAMPLE["parameters"].items()]
    R = ("--root", str(root))
    P = ("--project", str(work / "runyard.toml"))

    def ok(*args: str) -> Callable[[], None]:
        def go() -> None:
            out = cli(*args, cwd=work)
            assert out.returncode == 0, f"runyard {' '.join(args)}: {out.stderr}"

        return go

    def last_run_id() -> str:
        sealed = [e for e in entries(tree.logs_dir) if e["action"] == "run.sealed"]
        return sealed[-1]["detail"]["run_id"]

    def from_the_daemon(found: list[dict]) -> None:
        assert all(e["actor"].get("via") == "ipc" for e in found), found

    local = [
        Row("runtime init", ok("runtime", "init", str(work / "other")), [("init", "", "ok")],
            logs=work / "other" / "logs"),
        Row("runtime init (again)", ok("runtime", "init", str(work / "other")), [],
            logs=work / "other" / "logs"),
        Row("runtime ensure", ok("runtime", "ensure", "heat1d", "--catalog", url, *R),
            [("ensure", "heat1d", "ok")]),
        Row("runtime gc", ok("runtime", "gc", "--max-bytes", "0", "--all", *R),
            [("gc", "cache", "ok")]),
        Row("runtime gc --dry-run", ok("runtime", "gc", "--max-bytes", "0", "--dry-run", *R), []),
        Row("keys gen", ok("keys", "gen", "--out", str(work / "k1"), *R),
            [("keys.gen", str(work / "k1"), "ok")]),
        Row("keys gen --curve", ok("keys", "gen", "--curve", "--out", str(work / "c1"), *R),
            [("keys.gen", str(work / "c1"), "ok")]),
        Row("run --local",
            ok("run", "heat1d", "--local", *R, "--input", str(inputs), *params),
            [("run.sealed", "heat1d/", "ok")]),
        Row("replay", lambda: ok("replay", last_run_id(), *R)(), [("replay", "", "ok")]),
        Row("bundle pack", ok("bundle", "pack", "-o", str(work / "b1.tar.gz"), "--version",
                              "1.0.0", *R), []),
        Row("bundle install", ok("bundle", "install", str(work / "b1.tar.gz"), "--prefix",
                                 str(prefix)), [("install", "1.0.0", "ok")], logs=prefix / "logs"),
        Row("bundle install (again)", ok("bundle", "install", str(work / "b1.tar.gz"), "--prefix",
                                         str(prefix)), [], logs=prefix / "logs"),
        Row("bundle pack 1.1.0", ok("bundle", "pack", "-o", str(work / "b2.tar.gz"), "--version",
                                    "1.1.0", *R), []),
        Row("bundle upgrade", ok("bundle", "install", str(work / "b2.tar.gz"), "--prefix",
                                 str(prefix)), [("upgrade", "1.1.0", "ok")], logs=prefix / "logs"),
        Row("bundle rollback", ok("bundle", "rollback", "--prefix", str(prefix)),
            [("rollback", "1.0.0", "ok")], logs=prefix / "logs"),
    ]  # fmt: skip
    through_daemon = [
        Row("stop", ok("stop", "web", *R, *P), [("stop", "web", "ok")], check=from_the_daemon),
        Row("start", ok("start", "web", *R, *P), [("start", "web", "ok")], check=from_the_daemon),
        Row("restart", ok("restart", "web", *R, *P), [("restart", "web", "ok")]),
        Row("reload", ok("reload", *R, *P), [("reload", "daemon", "ok")]),
        Row("run (forwarded to the daemon)",
            ok("run", "heat1d", *R, "--input", str(inputs), *params),
            [("run.sealed", "heat1d/", "ok")], check=from_the_daemon),
        Row("shutdown", ok("shutdown", *R, *P),
            [("shutdown", "daemon", "ok"), ("daemon.exit", str(root), "ok")]),
    ]  # fmt: skip

    def play(row: Row) -> None:
        logs = row.logs or tree.logs_dir
        before = len(entries(logs))
        row.run()
        # The daemon appends off its loop, so its entry may land just after the reply.
        wait_for(lambda: len(entries(logs)) >= before + len(row.want), what=row.name)
        found = entries(logs)[before:]
        got = [(e["action"], e["result"]) for e in found]
        assert got == [(a, r) for a, _, r in row.want], f"{row.name}: {acted(found)}"
        for e, (_, target, _) in zip(found, row.want, strict=True):
            assert e["target"].startswith(target), f"{row.name}: {acted(found)}"
        row.check(found)

    try:
        for row in local:
            play(row)
        d = daemons(tree).start()
        wait_for(lambda: entries(tree.logs_dir)[-1]["action"] == "daemon.start", what="start")
        for row in through_daemon:
            play(row)
        d.proc.wait(timeout=60)
    finally:
        server.close()
    # Nothing came late: a second entry for any row would be here by now (the daemon is gone).
    assert entries(tree.logs_dir)[-1]["action"] == "daemon.exit"
    total = sum(len(r.want) for r in local + through_daemon if r.logs is None)
    first_row = next(i for i, e in enumerate(entries(tree.logs_dir)) if e["action"] == "ensure"
                     and e["target"] == "heat1d")  # fmt: skip
    assert len(entries(tree.logs_dir)) - first_row == total + 1  # + daemon.start
    for logs in (tree.logs_dir, prefix / "logs", work / "other" / "logs"):
        assert audit.verify_chain(audit.audit_path(logs)).ok


def test_only_the_action_writer_appends_to_the_audit_trail() -> None:
    """One writer: ``runtime.audit.record`` is called from runtime/ops/audit_action.py only."""
    callers = []
    for folder in ("daemon", "protocol", "runtime", "tui"):
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                imported = (
                    isinstance(node, ast.ImportFrom)
                    and "audit" in (node.module or "")
                    and any(a.name == "record" for a in node.names)
                )
                called = (  # audit.record(...) through the module
                    isinstance(node, ast.Attribute)
                    and node.attr == "record"
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "audit"
                )
                if imported or called:
                    callers.append(str(path.relative_to(REPO)))
    assert callers == ["runtime/ops/audit_action.py"]
