"""``build_run_installer``: a signed bundle into one self-extracting POSIX shell file.

    #!/bin/sh header (package_scripts.RUN_HEADER: payload size and sha256, the signer's
    public key in a here-document) ─ the bundle's .tar.gz bytes, unchanged, to the end

For boxes without a package manager: ``sh NAME-VERSION.run [--prefix DIR]`` checks the payload's
sha256, then ``runyard bundle install`` verifies the signature and installs beside the other
versions, switching ``current`` last; ``--service-install`` then runs ``runyard service
install``. The payload is cut with ``tail -c SIZE``, so the header's length does not matter.
The header depends only on the bundle, so the same bundle gives the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from runyard.runtime.core.atomic import fsync_dir

from .layout import BundleError
from .package_scripts import RUN_HEADER, fill
from .system_package import package_name_problem, read_bundle_facts

__all__ = ["build_run_installer"]


def build_run_installer(
    bundle: str | os.PathLike[str], out: str | os.PathLike[str], name: str
) -> Path:
    """Write the self-extracting installer of the signed ``bundle`` (a .tar.gz) to ``out``
    (mode 0755); BundleError on any refusal."""
    problem = package_name_problem(name)
    if problem:
        raise BundleError(problem)
    bundle, out = Path(bundle), Path(out).absolute()
    facts = read_bundle_facts(bundle)
    digest = hashlib.sha256()
    with open(bundle, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    header = fill(
        RUN_HEADER,
        name=name,
        version=facts.version,
        size=str(bundle.stat().st_size),
        sha256=digest.hexdigest(),
        pubkey=facts.public_pem.decode("ascii"),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as dst, open(bundle, "rb") as src:
            dst.write(header.encode("utf-8"))
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(out.parent)
    return out
