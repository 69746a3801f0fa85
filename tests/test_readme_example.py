"""The README's Python example runs as written (issue 15: it pointed at examples/catalog.json,
which nothing makes)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from daemonkit import runyard_env

REPO = Path(__file__).resolve().parent.parent


def _python_example() -> str:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if "ensure_service(" in b]
    return block


@pytest.mark.timeout(120)
def test_the_readme_python_example_finds_the_catalog_it_names(tmp_path: Path) -> None:
    block = _python_example()
    (catalog,) = re.findall(r'catalog="([^"]+)"', block)
    assert catalog == "examples/dist/catalog.json"  # what build_catalog.py writes by default
    assert "python examples/build_catalog.py" in (REPO / "README.md").read_text()
    # Built where the example's relative path finds it, outside the checkout.
    out = tmp_path / "examples" / "dist"
    subprocess.run(
        [sys.executable, str(REPO / "examples" / "build_catalog.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    env = {**runyard_env(), "RUNYARD_ROOT": str(tmp_path / "runtime")}
    code = block + "\nprint(binary.version, manifest.services[0].name, env['PATH'] != '')\n"
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1.1.0", "hello-http", "True"], run.stdout
