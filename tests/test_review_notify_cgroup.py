"""Review finding: the notify socket's sender check took a pid as the service's when the
service's cgroup directory merely *ended with* the sender's cgroup path (``str.endswith``): a
process in ``/web`` passed for the service whose cgroup is ``.../runyard-X/web``, in a cgroup
of its own. Real cgroups, real processes; everything made is removed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest
from test_containment import require_cgroup2

from runyard.daemon import cgroup as cg
from runyard.daemon.handle import ProcessHandle
from runyard.daemon.notify import belongs

pytestmark = pytest.mark.timeout(30)


def test_a_sender_in_another_cgroup_whose_path_is_a_suffix_does_not_belong() -> None:
    mount = require_cgroup2()
    own = cg.cgroup_of()
    assert own is not None
    base = mount / own.lstrip("/") / f"review-notify-{os.getpid()}"
    sender_cg = base / "web"  # the sender's cgroup: .../review-notify-N/web
    service_cg = base / "outer" / f"review-notify-{os.getpid()}" / "web"  # ends like it
    service = subprocess.Popen(["sleep", "60"], start_new_session=True)
    sender = subprocess.Popen(["sleep", "60"], start_new_session=True)
    member = subprocess.Popen(["sleep", "60"], start_new_session=True)  # in the service's
    try:
        service_cg.mkdir(parents=True)
        sender_cg.mkdir(exist_ok=True)
        cg.join(sender_cg, sender.pid)
        cg.join(service_cg, service.pid)
        cg.join(service_cg, member.pid)
        where = cg.cgroup_of(sender.pid)
        assert where is not None and str(service_cg).endswith(where)  # the trap is set
        handle = ProcessHandle(
            pid=service.pid,
            pgid=service.pid,
            create_time=time.time(),
            cgroup=str(service_cg),
            service="web",
        )
        assert belongs(service.pid, handle)
        assert belongs(member.pid, handle)  # by its cgroup alone: its own session, no parent
        assert not belongs(sender.pid, handle)
    finally:
        for proc in (service, sender, member):
            proc.kill()
            proc.wait()
        for path in (service_cg, service_cg.parent, service_cg.parent.parent, sender_cg, base):
            with contextlib.suppress(OSError):
                Path(path).rmdir()
    assert not base.exists()
