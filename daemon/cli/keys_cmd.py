"""``runyard keys gen``: Ed25519 signing key pairs and CurveZMQ key pairs (runtime/signing/keys.py).

A key generated while a runtime tree is at hand (``--root``, ``RUNYARD_ROOT``, the project's)
is recorded in its audit trail (``keys.gen``: the files and the public half, never the secret).
"""

from __future__ import annotations

import argparse
from typing import Any

from runyard.runtime.core.errors import RunyardError
from runyard.runtime.ops.audit_action import audited

from .common import open_tree
from .output import print_json

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser("keys", help="signing keys and CurveZMQ keys")
    ksub = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    p = ksub.add_parser(
        "gen",
        parents=[common],
        help="generate a key pair",
        description=(
            "Ed25519 (default): PREFIX.key (PKCS#8 PEM, 0600) and PREFIX.pub (PEM, 0644). "
            "--curve: PREFIX.key_secret (0600) and PREFIX.key (public), ZeroMQ certificates."
        ),
    )
    p.add_argument("--out", required=True, metavar="PREFIX", help="path prefix of the files")
    p.add_argument("--curve", action="store_true", help="a CurveZMQ pair for TCP control")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(handler=cmd_gen)


def cmd_gen(args: argparse.Namespace) -> int:
    kind = "curve" if args.curve else "ed25519"
    try:
        logs = open_tree(args).logs_dir
    except RunyardError:  # a broken project file is no reason to refuse a key
        return _gen(args, {})
    with audited(logs, "keys.gen", target=args.out, detail={"kind": kind}, needs_log=True) as act:
        return _gen(args, act.detail)


def _gen(args: argparse.Namespace, detail: dict[str, Any]) -> int:
    from runyard.runtime.signing.keys import (  # loads cryptography
        generate_curve_key,
        generate_signing_key,
    )

    if args.curve:
        curve = generate_curve_key(args.out, force=args.force)
        detail["public_key"] = curve.public_key
        if args.json:
            print_json(
                {
                    "kind": "curve",
                    "secret": str(curve.secret),
                    "public": str(curve.public),
                    "public_key": curve.public_key,
                }
            )
        else:
            print(f"wrote {curve.secret} (secret, mode 0600: keep it on this machine)")
            print(f"wrote {curve.public} (public certificate)")
            print(f"public key {curve.public_key}")
        return 0
    signing = generate_signing_key(args.out, force=args.force)
    detail["fingerprint"] = signing.fingerprint
    if args.json:
        print_json(
            {
                "kind": "ed25519",
                "private": str(signing.private),
                "public": str(signing.public),
                "fingerprint": signing.fingerprint,
            }
        )
    else:
        print(f"wrote {signing.private} (private key, mode 0600)")
        print(f"wrote {signing.public} (public key)")
        print(f"fingerprint sha256:{signing.fingerprint}")
    return 0
