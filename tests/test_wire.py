"""The wire: typed replies and events a newer daemon cannot break, one set of operations for both
clients, a daemon bounded under abuse, and request fields that name things checked as names."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from daemonkit import Daemon

from protocol.client import AsyncClient, BadRequest, Client
from runtime.tree import RuntimeTree

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def empty_daemon(root: Path, daemons) -> Daemon:
    tree = RuntimeTree(root)
    tree.init()
    (root.parent / "runyard.toml").write_text(f'root = "{root.name}"\n')
    return daemons(tree).start()


# --- runs.list takes an engine name, not a path ----------------------------------------------


def test_runs_list_engine_is_a_name_not_a_path(empty_daemon: Daemon) -> None:
    # A run bundle outside the tree's data/ that a path-like engine would reach.
    outside = empty_daemon.tree.root.parent / "elsewhere" / "runs" / "20260101T000000.000000Z-aaaa"
    outside.mkdir(parents=True)
    with empty_daemon.client() as c:
        for bad in ("../elsewhere", "../../tmp", "/etc", "a\x00b", "", "A/B"):
            with pytest.raises(BadRequest) as err:
                c.runs_list(bad)
            line = str(err.value)
            assert "\n" not in line and "invalid engine name" in line, line
        assert c.runs_list("heat1d").runs == []  # a good name of an engine with no runs
        assert c.status().daemon_pid == empty_daemon.proc.pid  # still serving


# --- both clients expose the same operations ---------------------------------------------------


def _operations(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name not in {"close", "request", "events"}
    }


def test_client_and_async_client_have_the_same_operations() -> None:
    sync_ops, async_ops = _operations(Client), _operations(AsyncClient)
    assert sorted(sync_ops) == sorted(async_ops)
    assert len(sync_ops) >= 16  # every request type has its method
    for name, sig in sync_ops.items():
        assert str(sig) == str(async_ops[name]), f"{name}: {sig} != {async_ops[name]}"
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name
    # request / events / close exist on both, with the same parameters.
    for name in ("close", "request", "events"):
        s, a = (
            inspect.signature(getattr(Client, name)),
            inspect.signature(getattr(AsyncClient, name)),
        )
        assert list(s.parameters.values()) == list(a.parameters.values()), name
