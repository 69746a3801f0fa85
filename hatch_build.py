"""Hatchling build hook: Runyard installs under one name, ``runyard``.

The repository keeps its five packages at the top (``daemon/``, ``protocol/``, ``runtime/``,
``schemas/``, ``tui/``); pyproject.toml's force-include maps each to ``runyard/<name>`` in the
wheel, so nothing Runyard installs can clash with another project's top-level ``daemon`` or
``runtime`` (python-daemon owns ``daemon/__init__.py``). What ties them together is
``runyard/__init__.py``, which does not exist in the repository; this hook writes it:

- in a wheel, a plain package marker;
- in an editable install, a package whose ``__path__`` is the checkout, so ``runyard.daemon``
  is the checkout's ``daemon/`` and edits take effect without a reinstall. Nothing else of the
  checkout goes on ``sys.path`` (no .pth), so ``import daemon`` stays python-daemon's.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

WHEEL_INIT = (
    '"""Runyard: a supervisor for self-contained runtimes on bare-metal and edge boxes."""\n'
)
EDITABLE_INIT = (
    '"""Runyard, installed editable: its packages are the checkout\'s top-level folders."""\n\n'
    "__path__ = [{root!r}]\n"
)


class CustomBuildHook(BuildHookInterface):
    """Write runyard/__init__.py for the wheel being built, and remove it afterwards."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        text = EDITABLE_INIT.format(root=self.root) if version == "editable" else WHEEL_INIT
        fd, self._init = tempfile.mkstemp(prefix="runyard-init-", suffix=".py")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        key = "force_include_editable" if version == "editable" else "force_include"
        build_data[key][self._init] = "runyard/__init__.py"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        init = getattr(self, "_init", None)
        if init:
            os.unlink(init)
