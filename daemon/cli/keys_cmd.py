"""``runyard keys gen``: Ed25519 signing key pairs and CurveZMQ key pairs (runtime/signing/keys.py)."""

from __future__ import annotations

import argparse
from typing import Any

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
    from runyard.runtime.signing.keys import (  # loads cryptography
        generate_curve_key,
        generate_signing_key,
    )

    if args.curve:
        curve = generate_curve_key(args.out, force=args.force)
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
