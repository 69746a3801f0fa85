"""The runyard.fleet Ansible collection (deploy/ansible/runyard/fleet) against three boxes.

Real everything: the collection is built with ``ansible-galaxy collection build`` and installed
into a temp collections path; ``ansible-playbook`` (ansible-core from the test extra) runs the
collection's own playbook ``runyard.fleet.rollout`` over SSH to one throwaway sshd on 127.0.0.1
(tests/sshbox.py). The three boxes are three inventory hosts on that sshd, each with its own
prefix (``runyard_prefix``) and its own running daemon on ``PREFIX/current``
(tests/fleetkit.py). Every box starts at 1.0.0 (1.0.0-rc.1 before it, so there is a previous version).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemonkit import runyard_env
from fleetkit import Box, release, release_key
from sshbox import SshBox, require_sshd

REPO = Path(__file__).resolve().parent.parent
COLLECTION = REPO / "deploy" / "ansible" / "runyard" / "fleet"
BIN = Path(sys.executable).parent
HOSTS = ("box1", "box2", "box3")
RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE
)


@dataclass
class Fleet:
    base: Path
    boxes: dict[str, Box]
    bundles: dict[str, Path]
    pubkey: Path
    env: dict[str, str]

    def rollout(self, bundle: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
        """``ansible-playbook runyard.fleet.rollout`` with one bundle; (result, recap by host)."""
        argv = [str(BIN / "ansible-playbook"), "runyard.fleet.rollout", *extra]
        for name, value in (
            ("runyard_bundle", self.bundles[bundle]),
            ("runyard_pubkey", self.pubkey),
            ("runyard_health_retries", 10),
            ("runyard_health_delay", 0.3),
        ):
            argv += ["-e", f"{name}={value}"]
        out = subprocess.run(
            argv, env=self.env, cwd=self.base, capture_output=True, text=True, timeout=120
        )
        recap = {
            m[0]: {
                "ok": int(m[1]),
                "changed": int(m[2]),
                "unreachable": int(m[3]),
                "failed": int(m[4]),
            }
            for m in RECAP.findall(out.stdout)
        }
        return out, recap

    def versions(self) -> dict[str, str]:
        return {name: box.version() for name, box in self.boxes.items()}


def _ansible_files(base: Path, ssh: SshBox, boxes: dict[str, Box]) -> dict[str, str]:
    """inventory.ini and ansible.cfg under ``base`` (nothing of ~/.ansible, ~/.ssh is used);
    returns the environment for ansible-playbook."""
    assert ssh.dir is not None
    lines = ["[runyard]"]
    for name, box in boxes.items():
        lines.append(
            f"{name} ansible_host=127.0.0.1 ansible_port={ssh.port} ansible_user=root "
            f"ansible_ssh_private_key_file={ssh.identity} runyard_prefix={box.prefix}"
        )
    (base / "inventory.ini").write_text("\n".join(lines) + "\n")
    ssh_args = " ".join(
        [
            "-F /dev/null -o ControlMaster=auto -o ControlPersist=30s",
            f"-o UserKnownHostsFile={ssh.dir / 'known_hosts'} -o GlobalKnownHostsFile=/dev/null",
            "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o IdentityAgent=none",
            "-o BatchMode=yes",
        ]
    )
    (base / "ansible.cfg").write_text(
        "[defaults]\n"
        f"inventory = {base / 'inventory.ini'}\n"
        f"collections_path = {base / 'collections'}\n"
        f"home = {base / 'ansible-home'}\n"
        f"local_tmp = {base / 'ansible-home' / 'tmp'}\n"
        f"remote_tmp = {base / 'remote-tmp'}\n"
        f"interpreter_python = {sys.executable}\n"
        "host_key_checking = True\nretry_files_enabled = False\nnocolor = True\nforks = 5\n"
        "[ssh_connection]\npipelining = True\n"
        f"control_path_dir = {base / 'cp'}\n"
        f"ssh_args = {ssh_args}\n"
    )
    env = {k: v for k, v in runyard_env().items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(base / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    return env


def _install_collection(base: Path, env: dict[str, str]) -> None:
    galaxy = str(BIN / "ansible-galaxy")
    dist = base / "dist"
    run = {"env": env, "capture_output": True, "text": True, "timeout": 60, "check": True}
    subprocess.run(
        [galaxy, "collection", "build", str(COLLECTION), "--output-path", str(dist)], **run
    )
    (tarball,) = dist.glob("runyard-fleet-*.tar.gz")
    subprocess.run(
        [galaxy, "collection", "install", str(tarball), "-p", str(base / "collections")], **run
    )


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    require_sshd()
    if not (BIN / "ansible-playbook").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("ansible-playbook is missing under CI=true (pyproject's test extra)")
        pytest.skip("ansible-core is not installed (pyproject's test extra)")
    base = Path(tempfile.mkdtemp(prefix="ry-"))  # short: the daemons' ipc sockets live in temp/
    boxes = {name: Box(base / name / "opt") for name in HOSTS}
    ssh = SshBox()
    try:
        key, pub = release_key(base)
        bundles = {
            "1.0.0-rc.1": release(base, "1.0.0-rc.1", key),
            "1.0.0": release(base, "1.0.0", key),
            "1.1.0": release(base, "1.1.0", key),
            "1.9.0-never-ready": release(base, "1.9.0", key, ready=False),
        }
        for box in boxes.values():
            box.install(bundles["1.0.0-rc.1"], pub)
            box.install(bundles["1.0.0"], pub)
            box.start()
        ssh.start()
        env = _ansible_files(base, ssh, boxes)
        _install_collection(base, env)
        yield Fleet(base, boxes, bundles, pub, env)
    finally:
        ssh.stop()  # its sessions first: ansible's ControlPersist masters end with them
        for box in boxes.values():
            box.stop()
        shutil.rmtree(base, ignore_errors=True)


def _said(out: subprocess.CompletedProcess[str]) -> str:
    return f"exit {out.returncode}\n{out.stdout[-4000:]}\n{out.stderr[-2000:]}"


@pytest.mark.timeout(120)
def test_check_mode_reports_what_would_change_and_changes_nothing(fleet: Fleet) -> None:
    before = fleet.versions()
    out, recap = fleet.rollout("1.9.0-never-ready", "--check", "--diff")
    assert out.returncode == 0, _said(out)
    assert sorted(recap) == sorted(HOSTS), _said(out)
    assert all(r["changed"] >= 1 and r["failed"] == 0 for r in recap.values()), recap
    # --diff: what current would become (box1 may hold the bundle from an earlier run)
    assert out.stdout.count('+    "current": "(the version of rt-1.9.0.tar.gz)"') >= 2, _said(out)
    assert fleet.versions() == before
    for box in fleet.boxes.values():
        assert not (box.prefix / "versions" / "1.9.0").exists()


@pytest.mark.timeout(120)
def test_a_good_bundle_rolls_to_all_three_and_a_second_run_changes_nothing(fleet: Fleet) -> None:
    out, recap = fleet.rollout("1.1.0")
    assert out.returncode == 0, _said(out)
    assert sorted(recap) == sorted(HOSTS)
    assert all(r["changed"] >= 1 and r["failed"] == 0 for r in recap.values()), recap
    assert fleet.versions() == dict.fromkeys(HOSTS, "1.1.0")
    for box in fleet.boxes.values():
        assert box.said("web 1.1.0 up, ready")  # reloaded onto the new program
        assert box.healthy()

    again, recap = fleet.rollout("1.1.0")
    assert again.returncode == 0, _said(again)
    assert {h: r["changed"] for h, r in recap.items()} == dict.fromkeys(HOSTS, 0), _said(again)
    assert fleet.versions() == dict.fromkeys(HOSTS, "1.1.0")


@pytest.mark.timeout(120)
def test_a_bundle_that_never_becomes_ready_stops_at_the_canary_rolled_back(fleet: Fleet) -> None:
    before = fleet.versions()
    out, recap = fleet.rollout("1.9.0-never-ready")
    assert out.returncode != 0, _said(out)
    # The canary ran and failed; the play stopped there (max_fail_percentage: 0).
    assert list(recap) == ["box1"], _said(out)
    assert recap["box1"]["failed"] == 1
    assert f"rolled back to {before['box1']} (healthy)" in out.stdout, _said(out)
    canary = fleet.boxes["box1"]
    assert canary.version() == before["box1"]
    assert (canary.prefix / "versions" / "1.9.0").is_dir()  # installed, then rolled back
    assert canary.said("web 1.9.0 up, warming")
    assert canary.healthy()
    # The others: untouched, not even copied to.
    assert fleet.versions() == before
    for name in ("box2", "box3"):
        box = fleet.boxes[name]
        assert not (box.prefix / "versions" / "1.9.0").exists()
        assert not (box.prefix / "incoming").exists() or not any(
            p.name.startswith("rt-1.9.0") for p in (box.prefix / "incoming").iterdir()
        )
        assert not box.said("1.9.0")


def test_the_module_documentation_parses_and_names_every_option() -> None:
    """Finding: a ``: `` inside a description line made DOCUMENTATION invalid YAML, so
    ``ansible-doc runyard.fleet.bundle`` refused it while the module itself ran fine."""
    import ast

    import yaml

    path = COLLECTION / "plugins" / "modules" / "bundle.py"
    tree = ast.parse(path.read_text())
    docs = {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
    }
    parsed = {name: yaml.safe_load(docs[name]) for name in ("DOCUMENTATION", "EXAMPLES", "RETURN")}
    call = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "AnsibleModule"
    )
    spec = next(k.value for k in call.keywords if k.arg == "argument_spec")
    assert isinstance(spec, ast.Dict)
    assert set(parsed["DOCUMENTATION"]["options"]) == {ast.literal_eval(k) for k in spec.keys}


def _run_module(args: dict[str, object], cwd: Path) -> dict:
    """The module file run as Ansible runs it on a box: its arguments in a JSON file, its
    result as JSON on stdout (no controller, no SSH: the module's own logic and the real CLI)."""
    import json

    (cwd / "args.json").write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    out = subprocess.run(
        [sys.executable, str(COLLECTION / "plugins" / "modules" / "bundle.py"), "args.json"],
        cwd=cwd,
        env={**runyard_env(), "PATH": f"{BIN}:{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout)


@pytest.mark.timeout(60)
def test_the_module_refuses_a_bundle_by_another_key_and_switches_nothing(tmp_path: Path) -> None:
    key, pub = release_key(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_pub = release_key(other)
    first, second = release(tmp_path, "1.0.0", key), release(tmp_path, "1.1.0", key)
    prefix = tmp_path / "opt"
    done = _run_module({"src": str(first), "prefix": str(prefix), "pubkey": str(pub)}, tmp_path)
    assert done["changed"] and done["action"] == "install" and done["version"] == "1.0.0", done
    refused = _run_module(
        {"src": str(second), "prefix": str(prefix), "pubkey": str(other_pub)}, tmp_path
    )
    assert refused.get("failed") and refused["msg"].startswith("bundle verify failed: signature: ")
    assert "\n" not in refused["msg"]
    assert os.readlink(prefix / "current") == "versions/1.0.0"
    nothing = _run_module({"prefix": str(prefix), "state": "rolled_back"}, tmp_path)
    assert nothing["failed"] and nothing["msg"] == f"{prefix}: no previous version to roll back to"
    missing = _run_module(
        {"src": str(second), "prefix": str(prefix), "runyard": "no-such-runyard"}, tmp_path
    )
    assert missing["failed"] and missing["msg"].startswith("no-such-runyard: not found")
