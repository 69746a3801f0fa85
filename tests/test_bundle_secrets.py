"""No secrets in a bundle: every rule of runtime/bundle/secrets.py, and pack refusing with one
error that lists every finding (never a value) until each path is --allow'ed."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from test_bundle_kit import make_tree

from runtime.bundle import SecretsFound, pack_bundle
from runtime.bundle.secrets import scan_config_text, scan_content, scan_name, secret_name
from runtime.keys import generate_curve_key, generate_signing_key

SECRET_VALUE = "hunter2-do-not-print"

OPENSSH = (
    b"-----BEGIN OPENSSH PRIVATE KEY-----\n"
    b"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    b"-----END OPENSSH PRIVATE KEY-----\n"
)
RSA_ENCRYPTED = (
    b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00FF\n\n"
    b"MIIEowIBAAKCAQEAvRk1ZbNMdXHJQGZ3BFiW7Q1RZP9i0\n-----END RSA PRIVATE KEY-----\n"
)


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "db_password",
        "DB_PASSWORD",
        "dbpassword",
        "passwd",
        "API_TOKEN",
        "authToken",
        "clientSecret",
        "client-secret",
        "secrets",
        "credentials",
        "db.pass",
        "passphrase",
        "api_key",
        "apiKey",
        "APIKey",
        "privateKey",
        "private_key",
        "SIGNING_KEY",
        "api_keys",
        "key",
        "secret_key",
        "aws_secret_access_key",
    ],
)
def test_secret_names(name: str) -> None:
    assert secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "keys_dir",
        "key_id",
        "public_key",
        "publicKey",
        "pubkey",
        "sort_key",
        "primary_key",
        "token_url",
        "password_file",
        "secret_path",
        "max_tokens",
        "passwordless",
        "bypass",
        "keyboard",
        "monkey",
        "hotkeys",
        "port",
        "",
    ],
)
def test_not_secret_names(name: str) -> None:
    assert not secret_name(name)


@pytest.mark.parametrize(
    ("rel", "reason"),
    [
        (".env", "an .env file"),
        ("config/web/prod.env", "an .env file"),
        ("config/web/.env.local", "an .env file"),
        ("config/web/server.key_secret", "a CurveZMQ secret key file"),
        ("config/web/store.p12", "a key store"),
        ("config/web/id_ed25519", "an SSH private key"),
        ("config/web/tls.key", "a .key file that is not plainly a public key"),
    ],
)
def test_names_that_are_secrets(rel: str, reason: str) -> None:
    assert reason in (scan_name(rel, b"anything") or "")


def test_public_key_files_are_not_secrets(tmp_path: Path) -> None:
    curve = generate_curve_key(tmp_path / "client")
    assert scan_name("config/web/client.key", curve.public.read_bytes()) is None
    assert scan_name("config/web/client.key_secret", curve.secret.read_bytes()) is not None
    signing = generate_signing_key(tmp_path / "rel")
    assert scan_name("config/web/rel.key", signing.public.read_bytes()) is None
    assert scan_name("config/web/rel.key", signing.private.read_bytes()) is not None
    assert scan_content(signing.public.read_bytes()) == []
    assert scan_name("config/web/id_ed25519.pub", b"ssh-ed25519 AAAA") is None
    assert scan_name("config/web/env.toml", b"") is None
    assert scan_name("config/web/environment.json", b"") is None


def test_content_rules(tmp_path: Path) -> None:
    signing = generate_signing_key(tmp_path / "rel")
    curve = generate_curve_key(tmp_path / "srv")
    assert scan_content(signing.private.read_bytes()) == ["holds a PEM private key (PRIVATE KEY)"]
    assert scan_content(OPENSSH) == ["holds a PEM private key (OPENSSH PRIVATE KEY)"]
    assert scan_content(RSA_ENCRYPTED) == ["holds a PEM private key (RSA PRIVATE KEY)"]
    assert scan_content(curve.secret.read_bytes()) == ["holds a CurveZMQ secret-key"]
    assert scan_content(curve.public.read_bytes()) == []
    # A binary that merely knows the marker (a format string, no key body) is no key.
    assert scan_content(b"\x00\x7fELF-----BEGIN %s PRIVATE KEY-----\x00\x01") == []
    assert scan_content(b"x" * 5_000_000 + OPENSSH + b"y" * 100) != []


@pytest.mark.parametrize(
    ("rel", "text", "keys"),
    [
        (
            "a.toml",
            'password = "s3"\n[db]\nuser = "u"\napi_key = "k"\n',
            ["password", "db.api_key"],
        ),
        ("a.toml", 'password = ""\nmax_tokens = 4096\ntoken_ttl = 5\n', []),
        ("a.toml", 'token = "${API_TOKEN}"\nkey = "/etc/tls/server.key"\n', []),
        ("a.json", '{"db": {"password": "s3", "port": 5432}, "tokens": ["a"]}', ["db.password"]),
        ("a.json", '{"properties": {"password": {"type": "string"}}}', []),
        ("a.yaml", "db:\n  password: s3  # comment\n  user: app\ntoken: ''\n", ["password"]),
        ("a.yml", "- secret: $VAULT_SECRET\n- client_secret: abc\n", ["client_secret"]),
        ("a.ini", "[auth]\nclient_secret = abc\n; password = old\n", ["client_secret"]),
        ("a.properties", "db.password=s3\ndb.url=jdbc:x\n", ["db.password"]),
        ("a.md", "password: s3\n", []),
        ("a.toml", "not toml = = \npassword = s3\n", ["password"]),
    ],
)
def test_config_values(rel: str, text: str, keys: list[str]) -> None:
    found = scan_config_text(rel, text.encode())
    assert found == [f"{k} holds a value under a secret-looking name" for k in keys]


def test_pack_refuses_every_secret_in_one_line_without_values(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src")
    web = tree.config_dir / "web"
    signing = generate_signing_key(tmp_path / "rel")
    curve = generate_curve_key(web / "daemon")  # daemon.key (public) + daemon.key_secret
    (web / ".env").write_text(f"API_TOKEN={SECRET_VALUE}\n")
    (web / "app.toml").write_text(f'[db]\npassword = "{SECRET_VALUE}"\nkeys_dir = "keys"\n')
    (web / "tls.pem").write_bytes(signing.private.read_bytes())
    (web / "notes.txt").write_bytes(OPENSSH)
    assert curve.public.exists()
    manifest_path = tree.manifest_path
    doc = json.loads(manifest_path.read_text())
    doc["services"][0]["env"] = {"DB_PASSWORD": SECRET_VALUE, "LOG_LEVEL": "info"}
    manifest_path.write_text(json.dumps(doc))
    out = tmp_path / "b.tar.gz"
    with pytest.raises(SecretsFound) as info:
        pack_bundle(tree, out, version="1.0.0")
    text = str(info.value)
    assert "\n" not in text and SECRET_VALUE not in text
    found = {(f.path, f.reason) for f in info.value.findings}
    assert found == {
        ("config/web/.env", "an .env file"),
        ("config/web/app.toml", "db.password holds a value under a secret-looking name"),
        ("config/web/daemon.key_secret", "a CurveZMQ secret key file (.key_secret)"),
        ("config/web/daemon.key_secret", "holds a CurveZMQ secret-key"),
        ("config/web/tls.pem", "holds a PEM private key (PRIVATE KEY)"),
        ("config/web/notes.txt", "holds a PEM private key (OPENSSH PRIVATE KEY)"),
        (
            "manifest.json",
            "services[0] (web 1.0.0).env.DB_PASSWORD holds a value under a secret-looking name",
        ),
    }
    assert "pass --allow PATH" in text
    assert not out.exists() and list(tmp_path.glob(".b.tar.gz*")) == []

    # Allowing some paths leaves the others refused...
    with pytest.raises(SecretsFound) as info:
        pack_bundle(
            tree, out, version="1.0.0", allow=["config/web/notes.txt", "./config/web/app.toml"]
        )
    assert {f.path for f in info.value.findings} == {
        "config/web/.env",
        "config/web/daemon.key_secret",
        "config/web/tls.pem",
        "manifest.json",
    }
    # ...and allowing every one packs, with the exemptions recorded in the signed manifest.
    allow = [
        "config/web/notes.txt",
        "config/web/app.toml",
        "config/web/.env",
        "config/web/daemon.key_secret",
        "config/web/tls.pem",
        "manifest.json",
    ]
    result = pack_bundle(tree, out, version="1.0.0", allow=allow)
    assert result.allowed == sorted(allow)
    with tarfile.open(out, "r:gz") as tf:
        packed = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert "config/web/daemon.key" in tf.getnames()  # the public half was never a problem
    assert packed["bundle"]["allowed"] == sorted(allow)


def test_allow_must_name_a_packed_file(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src")
    with pytest.raises(
        Exception, match=r"--allow config/web/missing.toml: not a file of this bundle"
    ):
        pack_bundle(tree, tmp_path / "b.zip", version="1.0.0", allow=["config/web/missing.toml"])


def test_the_signing_key_is_never_packed_even_when_allowed(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src")
    key = generate_signing_key(tree.config_dir / "web" / "release")
    with pytest.raises(Exception, match=r"config/web/release.key: is the signing key itself"):
        pack_bundle(
            tree,
            tmp_path / "b.zip",
            version="1.0.0",
            sign_key=key.private,
            allow=["config/web/release.key"],
        )
