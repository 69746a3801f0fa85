"""Credentials in a catalog URL (``https://user:token@host/catalog.json``), end to end.

Real http.servers on 127.0.0.1 that demand HTTP Basic auth (tests/conftest.py CountingServer)
and record the Authorization header of every request; the real CLI in a subprocess; a real
daemon. The password must never appear in output, in any file under the test's directory
(tree, saved catalog, cache index, audit trail, daemon log), nor reach another host.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from archives import publish, write_catalog
from runyard import runtime
from runyard.runtime.acquisition.catalog import remembered_catalog
from runyard.runtime.acquisition.urls import redact_url, split_credentials
from runyard.runtime.core.errors import AcquisitionError, CatalogUnreachable
from runyard.runtime.core.tree import RuntimeTree

if TYPE_CHECKING:
    from conftest import CountingServer

USER = "ci-bot"
PASSWORD = "s3cr@t:pw/x"  # every character that must be percent-encoded in a userinfo
USERINFO = "ci-bot:s3cr%40t%3Apw%2Fx"
#: What must be found nowhere: the password (plain or encoded: both start so) and the header.
SECRETS = ("s3cr", base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())


@pytest.fixture
def private(tmp_path: Path, http_server) -> tuple[Path, CountingServer]:
    """(directory, server): files served only to ci-bot with the password."""
    served = tmp_path / "private"
    served.mkdir()
    return served, http_server(served, basic_auth=(USER, PASSWORD))


@pytest.fixture(autouse=True)
def no_netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This machine's ~/.netrc plays no part; a test that wants one writes this file."""
    path = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(path))
    return path


def with_userinfo(base: str, userinfo: str = USERINFO, path: str = "/catalog.json") -> str:
    return base.replace("http://", f"http://{userinfo}@", 1) + path


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env["XDG_CONFIG_HOME"] = str(cwd / "xdg")
    return subprocess.run(
        [sys.executable, "-m", "runyard.daemon", *args, "--root", str(cwd / "runtime")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_secret_free(*texts: str, under: Path) -> None:
    """No secret in ``texts`` nor in any file below ``under`` (served files excepted)."""
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, text
    for path in under.rglob("*"):
        if path.is_file() and not path.is_symlink() and "private" not in path.parts:
            data = path.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in data, f"{path} holds a secret"


@pytest.mark.timeout(120)
def test_catalog_url_with_credentials_works_and_never_prints_the_password(
    tmp_path: Path, private: tuple[Path, CountingServer]
) -> None:
    served, server = private
    write_catalog(
        served / "catalog.json", [publish(served, "hello", v) for v in ("1.0.0", "1.2.0")]
    )
    catalog = with_userinfo(server.url)
    assert cli(tmp_path, "runtime", "init", "runtime").returncode == 0  # ensure makes no tree

    out = cli(tmp_path, "runtime", "ensure", "hello", "1.x", "--catalog", catalog)

    assert out.returncode == 0, out.stderr
    assert "installed hello 1.2.0" in out.stdout
    # The catalog and the archive (relative to it, so on the same origin) both got the header.
    assert server.requests == ["/catalog.json", "/hello-1.2.0.tar.gz"]
    assert all(a and a.startswith("Basic ") for a in server.authorizations)
    # Remembered without its credentials, and the user is told so.
    tree = RuntimeTree(tmp_path / "runtime")
    assert remembered_catalog(tree) == f"{server.url}/catalog.json"
    assert "credentials" in out.stderr and "not stored" in out.stderr
    saved = json.loads((tree.own_config_dir / "catalog-copy.json").read_bytes())
    assert saved["source"] == f"{server.url}/catalog.json"
    index = json.loads(tree.cache_index_path.read_bytes())
    assert [e["url"] for e in index["archives"].values()] == [f"{server.url}/hello-1.2.0.tar.gz"]

    again = cli(tmp_path, "runtime", "ensure", "hello", "1.0.0", "--catalog", catalog, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["version"] == "1.0.0"

    assert_secret_free(out.stdout, out.stderr, again.stdout, again.stderr, under=tmp_path)


@pytest.mark.timeout(120)
def test_wrong_password_fails_with_one_line_naming_the_redacted_url_and_http_401(
    tmp_path: Path, private: tuple[Path, CountingServer]
) -> None:
    served, server = private
    write_catalog(served / "catalog.json", [publish(served, "hello", "1.0.0")])
    wrong = with_userinfo(server.url, "ci-bot:s3cr-wrong")
    assert cli(tmp_path, "runtime", "init", "runtime").returncode == 0  # ensure makes no tree

    out = cli(tmp_path, "runtime", "ensure", "hello", "--catalog", wrong)

    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    redacted = with_userinfo(server.url, "ci-bot:***")
    assert redacted in lines[0] and "HTTP 401" in lines[0], lines[0]
    assert "Traceback" not in out.stderr
    assert_secret_free(out.stdout, out.stderr, under=tmp_path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("host", ["127.0.0.2", "127.0.0.1"], ids=["other-host", "other-port"])
def test_archive_on_another_host_does_not_get_the_authorization_header(
    tree: RuntimeTree, private: tuple[Path, CountingServer], http_server, tmp_path: Path, host: str
) -> None:
    served, server = private
    (tmp_path / "public").mkdir()
    public = http_server(tmp_path / "public", host=host)
    record = publish(tmp_path / "public", "hello", "1.0.0", url=f"{public.url}/hello-1.0.0.tar.gz")
    write_catalog(served / "catalog.json", [record])

    got = runtime.ensure_service("hello", "1.x", root=tree.root, catalog=with_userinfo(server.url))

    assert got.installed
    assert server.authorizations and all(server.authorizations)
    assert public.requests == ["/hello-1.0.0.tar.gz"]
    assert public.authorizations == [None]


@pytest.mark.timeout(60)
def test_redirect_to_another_host_drops_the_authorization_header(
    tree: RuntimeTree, private: tuple[Path, CountingServer], http_server, tmp_path: Path
) -> None:
    served, server = private
    (tmp_path / "public").mkdir()
    public = http_server(tmp_path / "public", host="127.0.0.2")
    record = publish(tmp_path / "public", "hello", "1.0.0")  # url relative: the private host
    write_catalog(served / "catalog.json", [record])
    # A same-origin redirect keeps the header (the private server would answer 401 otherwise);
    # the next one, to another host, drops it, and the userinfo that server put in its
    # Location is not sent either.
    server.redirects["/hello-1.0.0.tar.gz"] = "/moved/hello-1.0.0.tar.gz"
    server.redirects["/moved/hello-1.0.0.tar.gz"] = with_userinfo(
        public.url, "intruder:s3cr-theirs", "/hello-1.0.0.tar.gz"
    )

    got = runtime.ensure_service("hello", "1.x", root=tree.root, catalog=with_userinfo(server.url))

    assert got.installed
    assert server.requests == ["/catalog.json", "/hello-1.0.0.tar.gz", "/moved/hello-1.0.0.tar.gz"]
    assert all(server.authorizations)
    assert public.requests == ["/hello-1.0.0.tar.gz"]
    assert public.authorizations == [None]


@pytest.mark.timeout(60)
def test_archive_401_names_the_redacted_url(
    tree: RuntimeTree, private: tuple[Path, CountingServer], tmp_path: Path
) -> None:
    """Credentials written into an archive URL of the catalog are used and never shown."""
    served, server = private
    archive_url = with_userinfo(server.url, "ci-bot:s3cr-nope", "/hello-1.0.0.tar.gz")
    write_catalog(served / "catalog.json", [publish(served, "hello", "1.0.0", url=archive_url)])

    with pytest.raises(AcquisitionError) as caught:
        runtime.ensure_service("hello", "1.x", root=tree.root, catalog=with_userinfo(server.url))

    message = str(caught.value)
    assert with_userinfo(server.url, "ci-bot:***", "/hello-1.0.0.tar.gz") in message
    assert "HTTP 401" in message
    assert_secret_free(message, under=tmp_path)


@pytest.mark.timeout(60)
def test_netrc_supplies_credentials_for_its_machine_only(
    tree: RuntimeTree,
    private: tuple[Path, CountingServer],
    http_server,
    tmp_path: Path,
    no_netrc: Path,
) -> None:
    served, server = private
    (tmp_path / "public").mkdir()
    public = http_server(tmp_path / "public", host="127.0.0.2")
    record = publish(tmp_path / "public", "hello", "1.0.0", url=f"{public.url}/hello-1.0.0.tar.gz")
    write_catalog(served / "catalog.json", [record])
    # 127.0.0.1 is named, 127.0.0.2 is not; the default entry is never used.
    no_netrc.write_text(
        f"machine 127.0.0.1 login {USER} password {PASSWORD}\n"
        "default login someone password s3cr-default\n"
    )
    no_netrc.chmod(0o600)

    got = runtime.ensure_service(
        "hello", "1.x", root=tree.root, catalog=f"{server.url}/catalog.json"
    )

    assert got.installed
    assert server.authorizations and all(server.authorizations)
    assert public.authorizations == [None]


@pytest.mark.timeout(60)
def test_without_credentials_a_401_says_where_they_may_come_from(
    tree: RuntimeTree, private: tuple[Path, CountingServer]
) -> None:
    served, server = private
    write_catalog(served / "catalog.json", [publish(served, "hello", "1.0.0")])

    with pytest.raises(CatalogUnreachable) as caught:
        runtime.ensure_service("hello", root=tree.root, catalog=f"{server.url}/catalog.json")

    message = str(caught.value)
    assert "HTTP 401" in message and "no credentials sent" in message, message
    assert "NETRC" in message, message  # $NETRC, as the fixture sets it


@pytest.mark.timeout(120)
def test_daemon_ensure_with_credentials_keeps_the_password_out_of_logs_and_audit(
    root: Path, daemons, private: tuple[Path, CountingServer], no_netrc: Path
) -> None:
    from daemonkit import build_tree

    served, server = private
    records = [publish(served, "hello", "1.0.0"), publish(served, "other", "1.0.0")]
    write_catalog(served / "catalog.json", records)
    tree = build_tree(root, {"idle": "import time\ntime.sleep(60)\n"})
    daemon = daemons(tree).start()
    try:
        with daemon.client() as c:
            binary = c.ensure("hello", "1.x", catalog=with_userinfo(server.url)).binary
            assert binary.version == "1.0.0"
            # The catalog refuses the wrong password, its saved copy stands in, and the
            # archive is refused too: the error names the archive URL, redacted.
            with pytest.raises(Exception) as caught:
                c.ensure("other", "1.x", catalog=with_userinfo(server.url, "ci-bot:s3cr-bad"))
            message = str(caught.value)
    finally:
        daemon.stop()

    assert "HTTP 401" in message and "ci-bot:***@" in message, message
    audit = [json.loads(line) for line in (tree.logs_dir / "runyard" / "audit.jsonl").open()]
    # the tree's own services were ensured (and recorded) before, with no credentials
    ensures = [
        e for e in audit if e["action"] == "ensure" and "ci-bot" in e["detail"].get("catalog", "")
    ]
    assert [e["result"] for e in ensures] == ["ok", "failed"]
    assert ensures[0]["detail"]["catalog"] == with_userinfo(server.url, "ci-bot:***")
    assert "ci-bot:***@" in ensures[1]["detail"]["error"]
    assert_secret_free(message, under=root.parent)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@host/c.json", "https://user:***@host/c.json"),
        ("https://token@host:8443/c.json", "https://***@host:8443/c.json"),
        ("https://u:p@ss@host/c.json", "https://u:***@host/c.json"),
        ("https://host/c.json?x=a@b", "https://host/c.json?x=a@b"),
        ("/srv/catalog.json", "/srv/catalog.json"),
        (
            "catalog http://a:b@h/x: HTTP 401 (see http://c:d@i/y)",
            "catalog http://a:***@h/x: HTTP 401 (see http://c:***@i/y)",
        ),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_split_credentials_decodes_and_strips_the_userinfo() -> None:
    url, creds = split_credentials(f"http://{USERINFO}@127.0.0.1:8080/c.json")
    assert url == "http://127.0.0.1:8080/c.json"
    assert creds is not None and (creds.user, creds.password) == (USER, PASSWORD)
    assert PASSWORD not in repr(creds)
    assert split_credentials("http://127.0.0.1/c.json") == ("http://127.0.0.1/c.json", None)
