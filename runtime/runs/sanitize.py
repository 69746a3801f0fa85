"""Keep secrets out of sealed runs: the context of RUN_INPUT.json is sanitized, logs are scrubbed.

A *secret-looking name* is a key or variable name with a word (split on ``_ - . /``, spaces and
camelCase) among secret, token, password, passwd, pwd, pass, passphrase, key, apikey, auth,
authorization, credential(s), creds, cookie, session, private, signature, cert, otp, bearer,
salt, or one that contains secret, token, passw, credential, apikey, privatekey or
accesskey anywhere (``GITHUB_TOKEN``, ``apiKey``, ``db-password``, ``X_AUTH``, ``clientsecret``).

``sanitize_context`` replaces with ``"[redacted]"``, recursively through objects and arrays:

- the value of every key with a secret-looking name (whatever the value: string, object, ...);
- a string holding URL credentials (``scheme://user:pass@host``) or a ``Bearer``/``Basic``
  authorization;
- a string containing the value of a secret-looking variable of the engine's environment
  (values of 6 characters or more), so ``--context note=$API_TOKEN`` is caught too.

Only ``context`` is sanitized: ``inputs`` and ``parameters`` are what the engine computes with
and are sealed as given. Secrets an engine needs go in its environment, whose values never
reach a sealed run (RUN_CONDITIONS.json lists variable names only); its stderr is scrubbed of those
values before it is sealed as ``logs/engine.stderr``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["REDACTED", "looks_secret", "sanitize_context", "scrub_file", "secret_values"]

REDACTED = "[redacted]"

_WORDS = frozenset(
    {
        "secret",
        "secrets",
        "token",
        "tokens",
        "password",
        "passwords",
        "passwd",
        "pwd",
        "pass",
        "passphrase",
        "key",
        "keys",
        "apikey",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "creds",
        "cookie",
        "cookies",
        "session",
        "private",
        "signature",
        "cert",
        "otp",
        "bearer",
        "salt",
    }
)
_FRAGMENTS = ("secret", "token", "passw", "credential", "apikey", "privatekey", "accesskey")
_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_URL_CREDS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:[^/\s@]*@")
_AUTH_HEADER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_MIN_SECRET_LEN = 6


def looks_secret(name: str) -> bool:
    """Whether a key or variable name looks like it holds a secret (see the module doc)."""
    squashed = re.sub(r"[^a-z0-9]", "", name.lower())
    if any(f in squashed for f in _FRAGMENTS):
        return True
    return any(w.lower() in _WORDS for w in _SPLIT.split(name) if w)


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values of the secret-looking variables of ``env`` long enough to search for, longest
    first (so a secret that contains another is replaced whole)."""
    found = {v for k, v in env.items() if looks_secret(k) and len(v) >= _MIN_SECRET_LEN}
    return sorted(found, key=lambda v: (-len(v), v))


def _string_is_secret(value: str, secrets: Iterable[str]) -> bool:
    if _URL_CREDS.search(value) or _AUTH_HEADER.search(value):
        return True
    return any(s in value for s in secrets)


def sanitize_context(context: Any, secrets: Iterable[str] = ()) -> Any:
    """A sanitized copy of ``context`` (the input is not modified)."""
    known = list(secrets)

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: REDACTED if isinstance(k, str) and looks_secret(k) else walk(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        if isinstance(value, str) and _string_is_secret(value, known):
            return REDACTED
        return value

    return walk(context)


def scrub_file(path: str | os.PathLike[str], secrets: Iterable[str]) -> int:
    """Replace every occurrence of each secret in the file with ``[redacted]``, line by line
    (any size); returns how many were replaced. The file is rewritten only when one was found.
    Secrets spanning lines cannot be found this way and are not searched for."""
    needles = [s.encode("utf-8", "surrogateescape") for s in secrets if s and "\n" not in s]
    if not needles:
        return 0
    p = Path(path)
    with open(p, "rb") as fh:
        if not any(n in line for line in fh for n in needles):
            return 0
    count = 0
    tmp = p.with_name(p.name + ".scrub")
    with open(p, "rb") as src, open(tmp, "wb") as dst:
        for line in src:
            for needle in needles:
                n = line.count(needle)
                if n:
                    count += n
                    line = line.replace(needle, REDACTED.encode())
            dst.write(line)
    os.replace(tmp, p)
    return count
