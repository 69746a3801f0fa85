"""URLs we fetch from: credentials split off, sent only to their own origin, never shown.

Users coming from curl, mise or aqua name a private artifact server as
``https://user:token@host/catalog.json``. urllib does not take credentials from a URL (it
reads ``user:token@host`` as the host name), so every http(s) fetch goes through ``open_url``:

- ``split_credentials`` takes the userinfo off the URL, so the URL that is fetched, shown,
  remembered and recorded carries none; the percent-decoded user and password travel beside
  it as ``Credentials``, whose repr shows no password. Characters like ``@ : /`` in a
  password are percent-encoded in the URL, as curl expects them.
- The ``Authorization: Basic`` header goes only to the origin (scheme, host, port) the
  credentials were given for: an archive on another host does not get it, and neither does a
  redirect to another origin (a redirect within the origin keeps it). A redirect target's own
  userinfo is dropped: a server does not choose what we send.
- With no credentials for the URL's origin, a ``machine`` entry for its host in ``~/.netrc``
  (``$NETRC`` when set, as pip and requests read it) supplies them. A ``default`` entry is
  not used, so no host gets credentials it was not named for. An unreadable or malformed
  netrc counts as none (a 401 then says so): it must not break fetches that need no login.
- ``redact_url`` is what every message, log line, audit detail and saved file shows of a
  URL: ``https://user:***@host/path`` (``https://***@host/path`` when a user alone is given,
  which is how tokens are usually passed).
"""

from __future__ import annotations

import base64
import http.client
import netrc
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import IO, Any

from runyard.runtime.core.errors import RunyardError

__all__ = ["Credentials", "open_url", "redact_url", "split_credentials"]

#: ``scheme://userinfo@``: the userinfo runs to the last ``@`` before the path, query,
#: fragment or (in a line of text) whitespace, as urllib splits it.
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^\s/?#]*)@")
_HTTP = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


def redact_url(text: str) -> str:
    """``text`` (a URL, or a line holding URLs) with each userinfo's password, or its lone
    user (a token), replaced by ``***``."""

    def hide(m: re.Match[str]) -> str:
        user, colon, _secret = m[2].partition(":")
        return f"{m[1]}{user}:***@" if colon else f"{m[1]}***@"

    return _USERINFO.sub(hide, text)


def _origin(url: str) -> Origin | None:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return None
    if scheme not in _HTTP or not parts.hostname:
        return None
    return scheme, parts.hostname, port or _DEFAULT_PORTS[scheme]


@dataclass(frozen=True)
class Credentials:
    """A user and password for one origin; ``source`` says where they came from."""

    origin: Origin
    user: str
    password: str = field(repr=False)
    source: str = "the URL"

    def applies_to(self, url: str) -> bool:
        return _origin(url) == self.origin

    def header(self) -> str:
        pair = f"{self.user}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


def split_credentials(url: str) -> tuple[str, Credentials | None]:
    """An http(s) URL without its userinfo, and the credentials that were in it."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in _HTTP or "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    clean = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    origin = _origin(clean)
    if origin is None:
        return clean, None
    user, _, password = userinfo.partition(":")
    creds = Credentials(origin, urllib.parse.unquote(user), urllib.parse.unquote(password))
    return clean, creds


def _with_user(clean: str, user: str) -> str:
    """``clean`` as it is shown when ``user``'s credentials go with it: ``user:***@host``."""
    parts = urllib.parse.urlsplit(clean)
    userinfo = f"{urllib.parse.quote(user, safe='')}:***"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))


def _netrc_path() -> str:
    return os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")


def _netrc_credentials(url: str) -> tuple[Credentials | None, str]:
    """Credentials for ``url``'s host from a netrc ``machine`` entry, and a note for a 401."""
    origin = _origin(url)
    path = _netrc_path()
    shown = "$NETRC" if os.environ.get("NETRC") else "~/.netrc"
    if origin is None:
        return None, ""
    try:
        # Given no file, the module checks that ~/.netrc is not readable by others.
        parsed = netrc.netrc(None if shown == "~/.netrc" else path)
    except FileNotFoundError:
        return None, f"no credentials sent: none in the URL (user:token@host) or {shown}"
    except netrc.NetrcParseError as exc:
        # A syntax error's message may quote a token of the file, a password: then only the
        # line is named. The permission checks' messages quote none.
        why = exc.msg if exc.msg.startswith("~/.netrc") else f"unusable at line {exc.lineno}"
        return None, f"no credentials sent: {shown} ignored ({why})"
    except OSError as exc:
        return None, f"no credentials sent: {shown} unreadable ({exc.strerror or exc})"
    # hosts, not authenticators(): that falls back to the default entry.
    entry = parsed.hosts.get(origin[1])
    if entry is None:
        return None, f"no credentials sent: none in the URL (user:token@host) or {shown}"
    login, _account, password = entry
    return Credentials(origin, login or "", password or "", shown), ""


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, sending the credentials only to their own origin.

    The base handler copies a request's headers to the redirected request, except those added
    with ``add_unredirected_header``; ours are added that way, so each hop is decided here.
    """

    def __init__(self, creds: Credentials | None) -> None:
        self.creds = creds

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        newurl, _theirs = split_credentials(newurl)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and self.creds is not None and self.creds.applies_to(new.full_url):
            new.add_unredirected_header("Authorization", self.creds.header())
        return new


def open_url(
    url: str,
    credentials: Credentials | None,
    timeout: float,
    error: type[RunyardError],
    what: str = "",
) -> IO[bytes]:
    """The response to a GET of the http(s) ``url``, Basic auth sent to its origin only.

    Credentials are the URL's own, else ``credentials`` (those of the catalog the URL came
    from) when they are for the same origin, else a netrc entry for the host. Any failure is
    ``error("{what}{url}: reason")`` on one line, the URL redacted.
    """
    clean, creds = split_credentials(url)
    shown = f"{what}{redact_url(url)}"
    note = ""
    if creds is None and credentials is not None and credentials.applies_to(clean):
        creds = credentials
        shown = f"{what}{_with_user(clean, creds.user)}"
    if creds is None:
        creds, note = _netrc_credentials(clean)
    request = urllib.request.Request(clean)
    if creds is not None:
        request.add_unredirected_header("Authorization", creds.header())
        note = f"credentials from {creds.source} refused"
    opener = urllib.request.build_opener(_SameOriginRedirects(creds))
    try:
        response: Any = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        hint = f" ({note})" if exc.code in (401, 403) and note else ""
        raise error(f"{shown}: HTTP {exc.code} {exc.reason}{hint}") from None
    except urllib.error.URLError as exc:
        raise error(f"{shown}: {redact_url(str(exc.reason))}") from None
    except OSError as exc:
        raise error(f"{shown}: {redact_url(str(exc.strerror or exc))}") from None
    except (http.client.HTTPException, ValueError) as exc:
        # A malformed URL, or a server that does not speak HTTP.
        detail = redact_url(str(exc)) or type(exc).__name__
        raise error(f"{shown}: {detail}") from None
    return response
