"""`runyard reload` after a bundle upgrade runs the new bundle's programs (docs/BUNDLES.md).

A daemon runs on ``PREFIX/current``; an upgrade switches that link under it, so a service's
argv (``PREFIX/current/bin/web/1.0.0/.../web``) reads the same before and after whenever the
service's own version did not change. Found by the fleet rollout (issue 13): such an upgrade
left the old program running after reload, "unchanged 1", and health checked the old one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from daemonkit import wait_for
from fleetkit import Box, release, release_key


@pytest.mark.timeout(90)
def test_reload_restarts_a_service_whose_program_changed_under_the_same_version() -> None:
    base = Path(tempfile.mkdtemp(prefix="ry-"))  # short: the daemon's ipc sockets live in temp/
    box = Box(base / "opt")
    try:
        key, pub = release_key(base)
        first, second = release(base, "1.0.0", key), release(base, "1.1.0", key)
        box.install(first, pub)
        box.start()
        wait_for(lambda: box.said("web 1.0.0 up, ready"), 15, "1.0.0's program")
        box.install(second, pub)  # the service is web 1.0.0 in both; its program is not
        assert box.daemon is not None
        with box.daemon.client(timeout=60) as client:
            message = client.reload().message
        assert message.startswith("added 0, removed 0, restarted 1,"), message
        wait_for(lambda: box.said("web 1.1.0 up, ready"), 15, "1.1.0's program after reload")
        wait_for(box.healthy, 15, "web ready again")
    finally:
        box.stop()
        shutil.rmtree(base, ignore_errors=True)
