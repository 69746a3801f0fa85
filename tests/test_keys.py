"""``runyard keys gen`` and runtime/signing/keys.py: Ed25519 signing keys and CurveZMQ certificates."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import zmq
import zmq.auth
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from runyard.daemon.cli import main
from runyard.runtime.signing.keys import (
    KeyFileError,
    curve_client_options,
    generate_curve_key,
    generate_signing_key,
    load_authorized_curve_keys,
    load_curve_public,
    load_curve_secret,
    load_public_key,
    load_signing_key,
)

pytestmark = pytest.mark.timeout(60)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_signing_key_files_modes_and_round_trip(tmp_path: Path) -> None:
    files = generate_signing_key(tmp_path / "sub" / "signer")
    assert files.private == tmp_path / "sub" / "signer.key"
    assert files.public == tmp_path / "sub" / "signer.pub"
    assert mode(files.private) == 0o600
    assert mode(files.public) == 0o644
    assert files.private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert files.public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    # No temp file left behind by the atomic writes.
    assert sorted(p.name for p in files.private.parent.iterdir()) == ["signer.key", "signer.pub"]

    # Read back with cryptography alone: the files are the standard formats.
    private = serialization.load_pem_private_key(files.private.read_bytes(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    public = serialization.load_pem_public_key(files.public.read_bytes())
    signature = private.sign(b"run bundle")
    public.verify(signature, b"run bundle")
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"another bundle")

    # ... and with the load helpers; the fingerprint is sha256 of the raw public key.
    raw = load_public_key(files.public).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert files.fingerprint == hashlib.sha256(raw).hexdigest()
    load_public_key(files.public).verify(load_signing_key(files.private).sign(b"x"), b"x")


def test_curve_key_files_load_with_zmq_auth(tmp_path: Path) -> None:
    files = generate_curve_key(tmp_path / "server")
    assert files.secret == tmp_path / "server.key_secret"
    assert files.public == tmp_path / "server.key"
    assert mode(files.secret) == 0o600
    assert mode(files.public) == 0o644
    public, secret = zmq.auth.load_certificate(files.secret)
    assert public == files.public_key.encode() and secret is not None
    assert zmq.curve_public(secret) == public
    assert zmq.auth.load_certificate(files.public) == (public, None)
    assert zmq.auth.load_certificates(tmp_path) == {public: True}
    assert load_curve_secret(files.secret, require_private=True) == (public, secret)
    assert load_curve_public(files.public) == public
    assert load_curve_public(files.public_key) == public
    assert load_authorized_curve_keys(tmp_path) == {files.public: public}
    with pytest.raises(KeyFileError, match="no secret-key"):
        load_curve_secret(files.public)
    os.chmod(files.secret, 0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_curve_secret(files.secret, require_private=True)


@pytest.mark.parametrize("curve", [False, True])
def test_refuses_to_overwrite_unless_forced(tmp_path: Path, curve: bool) -> None:
    gen = generate_curve_key if curve else generate_signing_key
    secret_name = "k.key_secret" if curve else "k.key"
    first = gen(tmp_path / "k")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(KeyFileError, match="already exists"):
        gen(tmp_path / "k")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # Only one of the two files present is still refused, and the other is not written.
    (tmp_path / secret_name).unlink()
    with pytest.raises(KeyFileError, match="already exists"):
        gen(tmp_path / "k")
    assert not (tmp_path / secret_name).exists()
    second = gen(tmp_path / "k", force=True)
    assert second != first
    assert mode(tmp_path / secret_name) == 0o600


def test_cli_gen_both_kinds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = tmp_path / "signer"
    assert main(["keys", "gen", "--out", str(prefix), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "ed25519"
    assert out["private"] == f"{prefix}.key" and out["public"] == f"{prefix}.pub"
    raw = load_public_key(out["public"]).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert out["fingerprint"] == hashlib.sha256(raw).hexdigest()

    assert main(["keys", "gen", "--out", str(prefix)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"runyard: {prefix}.key: already exists (use --force to replace it)"
    assert main(["keys", "gen", "--out", str(prefix), "--force"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {prefix}.key" in text and "fingerprint sha256:" in text

    cprefix = tmp_path / "client"
    assert main(["keys", "gen", "--curve", "--out", str(cprefix), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "curve"
    assert out["secret"] == f"{cprefix}.key_secret" and out["public"] == f"{cprefix}.key"
    assert zmq.auth.load_certificate(out["public"])[0] == out["public_key"].encode()
    assert mode(Path(out["secret"])) == 0o600
    assert main(["keys", "gen", "--curve", "--out", str(cprefix)]) == 1
    assert "already exists" in capsys.readouterr().err


def test_curve_client_options(tmp_path: Path) -> None:
    server = generate_curve_key(tmp_path / "server")
    client = generate_curve_key(tmp_path / "client")
    tcp = ("tcp://127.0.0.1:7070", "tcp://127.0.0.1:7071")
    ipc = ("ipc:///x/control.sock", "ipc:///x/events.sock")
    assert curve_client_options(ipc, None, None) == {}
    opts = curve_client_options(tcp, server.public_key, client.secret)
    assert opts[zmq.CURVE_SERVERKEY] == server.public_key.encode()
    assert opts[zmq.CURVE_PUBLICKEY] == client.public_key.encode()
    assert opts == curve_client_options(tcp, server.public, load_curve_secret(client.secret))
    with pytest.raises(KeyFileError, match=r"^tcp endpoints need CurveZMQ keys: "):
        curve_client_options(tcp, None, None)
    with pytest.raises(KeyFileError, match="without curve_client_keys"):
        curve_client_options(tcp, server.public_key, None)
    with pytest.raises(KeyFileError, match="mixed"):
        curve_client_options((tcp[0], ipc[1]), server.public_key, client.secret)
    with pytest.raises(KeyFileError, match="are for tcp:// endpoints"):
        curve_client_options(ipc, server.public_key, client.secret)
    with pytest.raises(KeyFileError, match="no secret-key"):
        curve_client_options(tcp, server.public_key, client.public)
