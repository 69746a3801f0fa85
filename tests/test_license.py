"""Licenses: Ed25519 over RFC 8785 bytes, trusted issuers in the tree, community fallback.

Valid, expired, forged (another key), tampered (limits raised after signing) and malformed
licenses, through the library, the CLI and a real daemon: a bad license is one log line and
community limits, never a crash; max_services leaves the services beyond it stopped, says why
in status, and refuses to start them by name.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from daemonkit import SLEEPER, build_tree, wait_for

from runyard.daemon.spec import admit
from runyard.protocol.client import Client, DaemonUnreachable
from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.ops.license import (
    COMMUNITY_LIMITS,
    check_license,
    issuer_dir,
    license_path,
    sign_license,
    tree_license,
)
from runyard.runtime.signing.keys import SigningKeyFiles, generate_signing_key

REPO = Path(__file__).resolve().parent.parent
TODAY = datetime.datetime.now(datetime.UTC).date()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    return subprocess.run(
        [sys.executable, "-m", "runyard.daemon", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def document(**over: object) -> dict:
    doc = {
        "tier": "professional",
        "licensee": "ACME Test GmbH",
        "issued": (TODAY - datetime.timedelta(days=30)).isoformat(),
        "expires": (TODAY + datetime.timedelta(days=365)).isoformat(),
        "limits": {"max_services": 500, "max_nodes": 3},
    }
    doc.update(over)
    return doc


@pytest.fixture
def issuer(tmp_path: Path) -> SigningKeyFiles:
    return generate_signing_key(tmp_path / "keys" / "issuer")


@pytest.fixture
def stranger(tmp_path: Path) -> SigningKeyFiles:
    return generate_signing_key(tmp_path / "keys" / "stranger")


def write(path: Path, doc: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=2))
    return path


# --- the library ---------------------------------------------------------------------------------


def test_valid_license_grants_its_tier_and_limits(tmp_path: Path, issuer) -> None:
    path = write(tmp_path / "license.json", sign_license(document(), issuer.private))
    status = check_license(path, [issuer.public])
    assert status.status == "valid", status.reason
    assert status.tier == "professional"
    assert status.limits == {"max_services": 500, "max_nodes": 3}
    assert status.licensee == "ACME Test GmbH"
    assert status.issuer == str(issuer.public)


def test_expired_license_falls_back_to_community(tmp_path: Path, issuer) -> None:
    doc = document(issued="2020-01-01", expires="2021-06-30")
    path = write(tmp_path / "license.json", sign_license(doc, issuer.private))
    status = check_license(path, [issuer.public])
    assert status.status == "expired"
    assert status.tier == "community" and status.limits == COMMUNITY_LIMITS
    assert "expired on 2021-06-30" in status.reason
    # Good through the whole of its last day.
    assert check_license(path, [issuer.public], today=datetime.date(2021, 6, 30)).ok


def test_license_signed_by_another_key_is_forged(tmp_path: Path, issuer, stranger) -> None:
    path = write(tmp_path / "license.json", sign_license(document(), stranger.private))
    status = check_license(path, [issuer.public])
    assert status.status == "forged"
    assert status.limits == COMMUNITY_LIMITS
    assert "does not verify with any of 1 trusted issuer key(s)" in status.reason


def test_tampered_limits_are_forged(tmp_path: Path, issuer) -> None:
    signed = sign_license(document(limits={"max_services": 5}), issuer.private)
    signed["limits"]["max_services"] = 5000
    path = write(tmp_path / "license.json", signed)
    status = check_license(path, [issuer.public])
    assert status.status == "forged"
    assert status.claimed_limits == {"max_services": 5000}
    assert status.max_services is None  # community caps nothing


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ({"tier": "professional"}, "missing licensee, issued, expires, limits, signature"),
        ({**document(tier="platinum"), "signature": "x"}, "tier 'platinum' is not one of"),
        ({**document(expires="next year"), "signature": "x"}, "expires must be an RFC 3339 date"),
        ({**document(limits={}), "signature": "x"}, "limits.max_services must be an integer"),
        ({**document(), "signature": "not base64!"}, "signature must be the base64"),
    ],
)
def test_malformed_license_names_the_problem(
    tmp_path: Path, issuer, content: object, reason: str
) -> None:
    path = write(tmp_path / "license.json", content)  # type: ignore[arg-type]
    status = check_license(path, [issuer.public])
    assert status.status == "malformed"
    assert reason in status.reason, status.reason
    assert status.limits == COMMUNITY_LIMITS


def test_no_trusted_issuer_is_unverified(tmp_path: Path, issuer) -> None:
    path = write(tmp_path / "license.json", sign_license(document(), issuer.private))
    status = check_license(path, [])
    assert status.status == "unverified"
    assert status.tier == "community"


def test_tree_license_uses_the_tree_issuers_and_is_missing_without_a_file(
    tmp_path: Path, issuer
) -> None:
    tree = RuntimeTree(tmp_path / "rt")
    init_tree(tree)
    assert tree_license(tree).status == "missing"
    write(license_path(tree), sign_license(document(), issuer.private))
    assert tree_license(tree).status == "unverified"
    issuer_dir(tree).mkdir(parents=True)
    shutil.copy(issuer.public, issuer_dir(tree) / "vendor.pub")
    assert tree_license(tree).status == "valid"


def test_admission_is_start_order_with_dependencies() -> None:
    deps = {"a": (), "b": ("a",), "c": (), "d": ("c",), "e": ()}
    order = ["a", "b", "c", "d", "e"]
    assert admit(order, deps, None) == order
    assert admit(order, deps, 10) == order
    assert admit(order, deps, 3) == ["a", "b", "c"]
    # At reload the running ones keep their place; a newcomer does not push one out.
    assert admit(["a", "aa", "b", "c"], {**deps, "aa": ()}, 3, keep=["a", "b", "c"]) == [
        "a",
        "b",
        "c",
    ]
    # A service is admitted only with its dependencies.
    assert admit(["c", "x", "d"], {"c": (), "x": (), "d": ("c",)}, 2, keep=["x", "d"]) == [
        "c",
        "x",
    ]


# --- the CLI -------------------------------------------------------------------------------------


def test_cli_sign_verify_show(tmp_path: Path, issuer, stranger) -> None:
    draft = write(tmp_path / "draft.json", document(tier="enterprise"))
    signed = tmp_path / "license.json"
    out = cli("license", "sign", str(draft), "--key", str(issuer.private), "-o", str(signed))
    assert out.returncode == 0, out.stderr
    ok = cli("license", "verify", str(signed), "--issuer", str(issuer.public))
    assert ok.returncode == 0, ok.stderr
    assert "valid: enterprise for ACME Test GmbH" in ok.stdout
    bad = cli("license", "verify", str(signed), "--issuer", str(stranger.public))
    assert bad.returncode == 1
    assert bad.stderr.startswith("runyard: ") and "forged" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1

    tree = RuntimeTree(tmp_path / "rt")
    init_tree(tree)
    shown = cli("license", "show", "--root", str(tree.root), "--json")
    assert json.loads(shown.stdout)["status"] == "missing"
    issuer_dir(tree).mkdir(parents=True)
    shutil.copy(signed, license_path(tree))
    shutil.copy(issuer.public, issuer_dir(tree))
    shown = cli("license", "show", "--root", str(tree.root), "--json")
    got = json.loads(shown.stdout)
    assert (got["status"], got["tier"], got["limits"]["max_services"]) == (
        "valid",
        "enterprise",
        500,
    )
    human = cli("license", "show", "--root", str(tree.root))
    assert "status    valid" in human.stdout and "licensee  ACME Test GmbH" in human.stdout


@pytest.mark.parametrize(
    ("depth", "reason"),
    [(100_000, "JSON nested too deeply"), (600, "JSON nested deeper than 32 levels")],
)
def test_malformed_deeply_nested_license_is_community_never_a_crash(
    tmp_path: Path, issuer, depth: int, reason: str
) -> None:
    """Finding 5: JSON nested deeper than the recursion limit (or just deeper than any license)
    is a malformed license with community limits: doctor and license show do not crash."""
    text = '{"tier": "professional", "limits": {"max_services": ' + "[" * depth
    text += "]" * depth + "}}"
    tree = RuntimeTree(tmp_path / "rt")
    init_tree(tree)
    write(license_path(tree), text)
    status = check_license(license_path(tree), [issuer.public])
    assert (status.status, status.tier) == ("malformed", "community")
    assert reason in status.reason and status.limits == COMMUNITY_LIMITS
    shown = cli("license", "show", "--root", str(tree.root), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "malformed"
    doctor = cli("doctor", "--root", str(tree.root), "--json")
    assert "Traceback" not in doctor.stderr, doctor.stderr
    (lic,) = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "license"]
    assert lic["status"] == "warn" and "malformed" in lic["detail"]
    sign = cli("license", "sign", str(license_path(tree)), "--key", str(issuer.private))
    assert sign.returncode != 0 and "Traceback" not in sign.stderr
    assert len(sign.stderr.strip().splitlines()) == 1, sign.stderr


# --- a real daemon -------------------------------------------------------------------------------


def licensed_tree(root: Path, issuer: SigningKeyFiles, doc: dict | str | None) -> RuntimeTree:
    tree = build_tree(root, {"alpha": SLEEPER, "beta": SLEEPER, "gamma": SLEEPER})
    issuer_dir(tree).mkdir(parents=True)
    shutil.copy(issuer.public, issuer_dir(tree) / "vendor.pub")
    if doc is not None:
        write(license_path(tree), doc)
    return tree


def running(d) -> dict[str, tuple[str, str]]:
    with d.client() as c:
        return {s.name: (s.state, s.reason) for s in c.status().services}


@pytest.mark.timeout(120)
def test_max_services_leaves_the_last_in_start_order_stopped_and_refuses_it(
    root: Path, daemons, issuer
) -> None:
    doc = sign_license(document(limits={"max_services": 2}), issuer.private)
    tree = licensed_tree(root, issuer, doc)
    d = daemons(tree).start()
    wait_for(
        lambda: running(d)["alpha"][0] == running(d)["beta"][0] == "running", what="a and b up"
    )
    state, reason = running(d)["gamma"]
    assert state == "stopped"
    assert "over the professional tier's limit of 2 services (max_services)" in reason
    refused = cli("start", "gamma", "--root", str(root))
    assert refused.returncode == 1
    assert "gamma: not started: over the professional tier's limit of 2" in refused.stderr
    with d.client() as c:
        reply = c.start(all=True)
        assert "1 service(s) not started" in reply.message
    assert running(d)["gamma"][0] == "stopped"

    # A bigger license and a reload: gamma starts, nothing else restarts.
    pids = {n: s.pid for n, s in ((s.name, s) for s in d.client().status().services)}
    write(license_path(tree), sign_license(document(limits={"max_services": 3}), issuer.private))
    with d.client() as c:
        c.reload()
    wait_for(lambda: running(d)["gamma"][0] == "running", what="gamma up after reload")
    with d.client() as c:
        after = {s.name: s.pid for s in c.status().services}
    assert after["alpha"] == pids["alpha"] and after["beta"] == pids["beta"]


@pytest.mark.timeout(120)
def test_up_under_a_capped_license_starts_the_rest_and_exits_1_naming_what_it_left_out(
    root: Path, issuer
) -> None:
    """As `systemctl start a b c` or `docker compose up -d` when one cannot start: what can run
    runs, the command exits 1 and stderr says, in one line, which service and why."""
    doc = sign_license(document(limits={"max_services": 2}), issuer.private)
    tree = licensed_tree(root, issuer, doc)
    try:
        up = cli("up", "--root", str(root))
        assert up.returncode == 1, up
        assert up.stdout.startswith("daemon started (pid "), up.stdout
        assert up.stderr.splitlines() == [
            "runyard: gamma: not started: over the professional tier's limit of 2 services "
            "(max_services); this is service 3 of 3 in start order"
        ]
        with Client(tree.root, timeout=10) as c:
            wait_for(
                lambda: (
                    {s.name: s.state for s in c.status().services}
                    == {"alpha": "running", "beta": "running", "gamma": "stopped"}
                ),
                what="alpha and beta up, gamma left out",
            )
        again = cli("up", "--root", str(root))  # the daemon runs: the same answer
        assert again.returncode == 1 and again.stderr == up.stderr, again
    finally:
        with contextlib.suppress(DaemonUnreachable), Client(tree.root, timeout=30) as c:
            c.shutdown()


def _bad(kind: str, issuer: SigningKeyFiles, stranger: SigningKeyFiles) -> dict | str:
    if kind == "expired":
        doc = document(issued="2020-01-01", expires="2020-12-31", limits={"max_services": 1})
        return sign_license(doc, issuer.private)
    if kind == "forged":
        return sign_license(document(limits={"max_services": 1}), stranger.private)
    if kind == "tampered":
        signed = sign_license(document(limits={"max_services": 1}), issuer.private)
        signed["licensee"] = "Someone Else"
        return signed
    if kind == "deeply-nested":
        return '{"tier": "professional", "limits": ' + "[" * 100_000 + "]" * 100_000 + "}"
    return '{"tier": "professional", "limits": '


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["expired", "forged", "tampered", "malformed", "deeply-nested"])
def test_bad_license_is_one_log_line_and_community_limits(
    root: Path, daemons, issuer, stranger, kind: str
) -> None:
    tree = licensed_tree(root, issuer, _bad(kind, issuer, stranger))
    d = daemons(tree).start()
    # Community caps nothing: all three run although the (bad) license said 1.
    wait_for(lambda: {s for s, _ in running(d).values()} == {"running"}, what="all three running")
    log = (tree.logs_dir / "runyard" / "daemon.log").read_text()
    lines = [line for line in log.splitlines() if "license:" in line]
    assert len(lines) == 1, lines
    expected = {"tampered": "forged", "deeply-nested": "malformed"}.get(kind, kind)
    assert "WARNING" in lines[0] and expected in lines[0]
    assert "running with community limits (no limits)" in lines[0]
    shown = json.loads(cli("license", "show", "--root", str(root), "--json").stdout)
    assert shown["tier"] == "community"


def test_no_license_caps_no_services(root: Path) -> None:
    """Community (no license) caps nothing: services past the 100th are admitted too."""
    tree = RuntimeTree(root)
    init_tree(tree)
    status = tree_license(tree)
    assert status.status == "missing" and status.max_services is None
    order = [f"s{i:03d}" for i in range(150)]
    assert admit(order, {}, status.max_services) == order


@pytest.mark.timeout(120)
def test_license_cap_speaks_in_up_start_and_health(root: Path, issuer) -> None:
    doc = sign_license(document(limits={"max_services": 2}), issuer.private)
    tree = licensed_tree(root, issuer, doc)
    try:
        up = cli("up", "--root", str(root))
        assert up.returncode == 1, up.stderr
        (line,) = up.stderr.strip().splitlines()
        assert "gamma: not started: over the professional tier's limit of 2 services" in line
        started = cli("start", "--all", "--root", str(root))
        assert started.returncode == 1
        assert "1 service(s) not started" in started.stderr
        with Client(tree.root, timeout=10) as c:
            wait_for(
                lambda: (
                    {s.name: s.state for s in c.status().services}
                    == {"alpha": "running", "beta": "running", "gamma": "stopped"}
                ),
                what="alpha, beta up; gamma held back",
            )
            (gamma,) = c.status(["gamma"]).services
        assert "(max_services)" in gamma.reason  # what the TUI's INFO column shows
        health = cli("health", "--root", str(root))
        assert health.returncode == 1
        assert "gamma: not started: over the professional tier's limit of 2" in health.stdout
    finally:
        with contextlib.suppress(DaemonUnreachable), Client(tree.root, timeout=20) as c:
            c.shutdown()
