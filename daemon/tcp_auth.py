"""The ZAP authenticator of the CurveZMQ TCP sockets: names each client by its authorized key
file. Apart from ``tcp_control`` so that zmq.auth is imported only by a daemon with
``[daemon] tcp`` (docs/ARCHITECTURE.md, "Idle footprint").
"""

from __future__ import annotations

import logging

import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

__all__ = ["NamingAuthenticator"]


class NamingAuthenticator(AsyncioAuthenticator):
    """Tells each Curve connection's User-Id as the authorized key file's name."""

    def __init__(
        self, context: zmq.asyncio.Context, key_names: dict[bytes, str], log: logging.Logger
    ) -> None:
        super().__init__(context, log=log)
        self.key_names = key_names

    def curve_user_id(self, client_public_key: bytes) -> str:
        z85_key = super().curve_user_id(client_public_key)
        return self.key_names.get(z85_key.encode("ascii"), z85_key)
