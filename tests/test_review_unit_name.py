"""Review finding: the default unit name is ``runyard-ROOTNAME.service``, and the root of an
install prefix is ``DIR/current`` (docs/OPERATIONS.md), so every prefix got
``runyard-current.service``: ``service install`` for a second prefix silently replaced the
first one's unit (reported only as "replaced")."""

from __future__ import annotations

from pathlib import Path

from runyard.runtime.ops.systemd_unit import unit_name


def test_two_install_prefixes_get_two_unit_names() -> None:
    plant = unit_name(Path("/opt/runyard/plant/current"))
    edge = unit_name(Path("/opt/runyard/edge/current"))
    assert plant != edge
    assert plant == "runyard-plant.service"
    assert unit_name(Path("/srv/runtime")) == "runyard-runtime.service"  # as before
