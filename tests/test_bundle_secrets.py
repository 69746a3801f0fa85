"""No secrets in a bundle: every rule of runtime/bundle/secrets.py, and pack refusing with one
error that lists every finding (never a value) until each path is --allow'ed."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from test_bundle_kit import make_tree

from runyard.runtime.bundle import SecretsFound, pack_bundle
from runyard.runtime.bundle.secrets import scan_config_text, scan_content, scan_name, secret_name
from runyard.runtime.signing.keys import generate_curve_key, generate_signing_key

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
        ("a.md", "password: s3\n", ["password"]),
        (
            "credentials",
            "[default]\naws_secret_access_key = wJalrXUtnFEMI\n",
            ["aws_secret_access_key"],
        ),
        ("app.yaml.tmpl", "db:\n  password: hunter2\n  user: {{ user }}\n", ["password"]),
        ("app.yaml.tmpl", "password: '{{ db_password }}'\ntoken: ${TOKEN}\n", []),
        ("app.json.tmpl", '{\n  "password": "",\n  "token_url": "https://x"\n}\n', []),
        ("app.json.tmpl", '{\n  "password": "s3",\n  "keys_dir": "k"\n}\n', ["password"]),
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
        ("config/web/.env", "API_TOKEN holds a value under a secret-looking name"),
        ("config/web/app.toml", "db.password holds a value under a secret-looking name"),
        ("config/web/daemon.key_secret", "a CurveZMQ secret key file (.key_secret)"),
        ("config/web/daemon.key_secret", "holds a CurveZMQ secret-key"),
        ("config/web/daemon.key_secret", "secret-key holds a value under a secret-looking name"),
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


# --- regressions ----------------------------------------------------------------------------


def _indented(pem: bytes, indent: str) -> str:
    return "".join(f"{indent}{line}\n" for line in pem.decode().splitlines())


def test_private_key_inside_a_config_file_is_refused(tmp_path: Path) -> None:
    """A real Ed25519 PEM key embedded in YAML (block and folded scalars) and JSON (a string
    with escaped newlines, an array of lines), under names that are not secret words (``pem``,
    ``server_pem``), was packed: the PEM rule wanted a real newline then base64 at the start
    of the next line."""
    pem = generate_signing_key(tmp_path / "k").private.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    lines = pem.decode().splitlines()
    embedded = {
        "block.yaml": f"tls:\n  server_pem: |\n{_indented(pem, '    ')}  port: 443\n",
        "folded.yaml": f"server_pem: >\n{_indented(pem, '  ')}",
        "quoted.yaml": f"server_pem: {json.dumps(pem.decode())}\n",
        "string.json": json.dumps({"tls": {"pem": pem.decode()}}),
        "pretty.json": json.dumps({"pem": pem.decode()}, indent=2),
        "lines.json": json.dumps({"pem": lines}, indent=4),
        "double.json": json.dumps({"doc": json.dumps({"pem": pem.decode()})}),
        "crlf.conf": "pem = " + pem.decode().replace("\n", "\r\n"),
    }
    for name, text in embedded.items():
        assert scan_content(text.encode()) == ["holds a PEM private key (PRIVATE KEY)"], name
    # Under config/ the marker alone is enough (a key cut short, a key in a comment)...
    marker = b'# server_pem: "-----BEGIN EC PRIVATE KEY-----\\n..."\n'
    assert scan_content(marker) == []
    assert scan_content(marker, config=True) == ["holds a PEM private key marker (EC PRIVATE KEY)"]
    # ...but not a public key or a certificate, nor (outside config/) a binary's format string.
    public = generate_signing_key(tmp_path / "p").public.read_bytes()
    assert scan_content(json.dumps({"pem": public.decode()}).encode(), config=True) == []
    assert scan_content(b"\x00-----BEGIN %s PRIVATE KEY-----\x00 AAAAAAAAAAAAAAAAAAAA") == []

    tree = make_tree(tmp_path / "src")
    web = tree.config_dir / "web"
    for name, text in embedded.items():
        (web / name).write_text(text)
    (web / "notes.yaml").write_bytes(marker)
    with pytest.raises(SecretsFound) as info:
        pack_bundle(tree, tmp_path / "b.tar.gz", version="1.0.0")
    found = {(f.path, f.reason) for f in info.value.findings}
    assert found == {
        *((f"config/web/{n}", "holds a PEM private key (PRIVATE KEY)") for n in embedded),
        ("config/web/notes.yaml", "holds a PEM private key marker (EC PRIVATE KEY)"),
    }
    assert "MC4CAQ" not in str(info.value)  # never a byte of the key itself
    allow = [f"config/web/{n}" for n in [*embedded, "notes.yaml"]]
    assert pack_bundle(tree, tmp_path / "b.tar.gz", version="1.0.0", allow=allow).allowed


def test_config_files_of_1_mib_or_more_are_value_scanned(tmp_path: Path) -> None:
    """A config file of 1 MiB or more was read through mmap for its sha256 and never
    value-scanned: ``password: ...`` after a megabyte of comments was packed."""
    from runyard.runtime.bundle.secrets import MAX_CONFIG_SCAN

    tree = make_tree(tmp_path / "src")
    web = tree.config_dir / "web"
    filler = "# " + "x" * 78 + "\n"
    (web / "big.yaml").write_text(filler * 20_000 + f"db:\n  password: {SECRET_VALUE}\n")
    (web / "big.toml").write_text(filler * 20_000 + f'[db]\npassword = "{SECRET_VALUE}"\n')
    (web / "big.pem.txt").write_text(filler * 20_000 + "-----BEGIN PRIVATE KEY-----\n")
    (web / "clean.yaml").write_text(filler * 20_000 + "db:\n  keys_dir: /etc/keys\n")
    with (web / "huge.conf").open("w") as fh:  # too large to scan: refused as such
        fh.write(filler * (MAX_CONFIG_SCAN // len(filler) + 1))
    assert all((web / n).stat().st_size >= 1 << 20 for n in ("big.yaml", "big.toml", "clean.yaml"))
    with pytest.raises(SecretsFound) as info:
        pack_bundle(tree, tmp_path / "b.zip", version="1.0.0")
    size = (web / "huge.conf").stat().st_size
    assert {(f.path, f.reason) for f in info.value.findings} == {
        ("config/web/big.yaml", "password holds a value under a secret-looking name"),
        ("config/web/big.toml", "db.password holds a value under a secret-looking name"),
        ("config/web/big.pem.txt", "holds a PEM private key marker (PRIVATE KEY)"),
        (
            "config/web/huge.conf",
            f"is {size} bytes, too large to scan for secret values (limit 16 MiB)",
        ),
    }
    assert SECRET_VALUE not in str(info.value)
    (web / "big.yaml").unlink()
    (web / "big.toml").unlink()
    (web / "big.pem.txt").unlink()
    result = pack_bundle(tree, tmp_path / "b.zip", version="1.0.0", allow=["config/web/huge.conf"])
    assert result.allowed == ["config/web/huge.conf"]


def test_config_files_with_no_known_suffix_are_value_scanned(tmp_path: Path) -> None:
    """``config/web/credentials`` (aws_secret_access_key = ...) and ``config/web/app.yaml.tmpl``
    (password: hunter2) were packed: only known suffixes were value-scanned."""
    tree = make_tree(tmp_path / "src")
    web = tree.config_dir / "web"
    (web / "credentials").write_text(
        f"[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = {SECRET_VALUE}\n"
    )
    (web / "app.yaml.tmpl").write_text(f"db:\n  user: app\n  password: {SECRET_VALUE}\n")
    (web / "settings.env.sh").write_text(f"export API_TOKEN={SECRET_VALUE}\nexport X=1\n")
    (web / "latin1.cfg.in").write_bytes(b"# r\xe9glages\npassword = s\xe9same\n")
    # The documented non-secrets pass in any file: a schema default, references, paths,
    # names whose last word is not a secret word, template placeholders.
    (web / "defaults.conf.tmpl").write_text(
        'password = ""\n'
        "keys_dir = /etc/runyard/keys\n"
        "token_url = https://auth.example/token\n"
        "password_file = ./secrets/db\n"
        "api_key = ${API_KEY}\n"
        "client_secret = $CLIENT_SECRET\n"
        "db_password = {{ db_password }}\n"
        "signing_key = vault:kv/release\n"
        "max_tokens = 4096\n"
    )
    (web / "README").write_text("See keys_dir and token_url; no secret here.\n")
    with pytest.raises(SecretsFound) as info:
        pack_bundle(tree, tmp_path / "b.tar.gz", version="1.0.0")
    assert {(f.path, f.reason) for f in info.value.findings} == {
        (
            "config/web/credentials",
            "aws_secret_access_key holds a value under a secret-looking name",
        ),
        ("config/web/app.yaml.tmpl", "password holds a value under a secret-looking name"),
        ("config/web/latin1.cfg.in", "password holds a value under a secret-looking name"),
        ("config/web/settings.env.sh", "API_TOKEN holds a value under a secret-looking name"),
    }
    assert SECRET_VALUE not in str(info.value)
    for name in ("credentials", "app.yaml.tmpl", "settings.env.sh", "latin1.cfg.in"):
        (web / name).unlink()
    a = pack_bundle(tree, tmp_path / "a.tar.gz", version="1.0.0")
    b = pack_bundle(tree, tmp_path / "b.tar.gz", version="1.0.0")
    assert a.sha256 == b.sha256  # still deterministic


def test_a_thousand_findings_make_one_readable_line_not_a_wall() -> None:
    from runyard.runtime.bundle.layout import SHOWN_FINDINGS, Finding

    findings = [Finding(f"config/svc/c{i}.txt", "holds a value") for i in range(972)]
    exc = SecretsFound(findings)
    text = str(exc)
    assert "\n" not in text
    assert text.startswith("refusing to pack 972 secret-looking item(s) in 972 path(s)")
    assert text.count("holds a value") == SHOWN_FINDINGS
    assert text.endswith(f"and {972 - SHOWN_FINDINGS} more (--json lists every one)")
    assert exc.findings == findings  # the whole list stays available to --json


def test_a_secret_that_starts_with_a_slash_is_not_taken_for_a_path() -> None:
    """Regression: a ZeroMQ Z85 secret key starts with `/` one time in 85 and passed as a path."""
    z85 = "/2M]yFG8(p1e?SAcUqhZzR]+EyN3}6!UuA<y5KE]"
    text = f'curve\n    secret-key = "{z85}"\n'.encode()
    assert any("secret-key holds" in r for r in scan_config_text("config/web/d.key_secret", text))
    for path in ("/run/secrets/db", "./keys/server.pem", "~/creds/api", "../shared/token.txt"):
        assert scan_config_text("config/web/app.yaml", f"password: {path}\n".encode()) == []
