"""Where the daemon of a tree listens: ``ipc://`` sockets in a directory only its owner can enter.

The sockets live in ``runtime/temp/`` (mode 0700). A unix socket path has a hard limit (108
bytes on Linux, 104 on macOS); when the tree is too deep for that, both sides derive the same
short directory ``$TMPDIR/runyard-<uid>/<hash of the root>/``, which the daemon creates 0700
and both sides refuse when it is not owned by this user or not private.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import msgspec

from runyard.runtime.core.digest import sha256
from runyard.runtime.core.errors import SocketDirError

__all__ = ["RELAY_MARK", "Endpoints", "SocketDirError", "endpoints_for", "prepare_socket_dir"]

#: A file in a socket directory served by ``runyard --host``'s relay (protocol/ssh_relay.py),
#: not by a daemon: its clients keep heartbeats, which run end to end to the box's daemon.
RELAY_MARK = "relayed"

#: Room left under the platform limit for the longest socket name we use.
_MAX_SUN_PATH = 100


class Endpoints(msgspec.Struct, frozen=True):
    directory: Path
    control: str
    events: str


def endpoints_for(root: str | os.PathLike[str]) -> Endpoints:
    temp = Path(root).absolute() / "temp"
    # An installed runtime bundle shares temp/ across its versions (versions/<v>/temp ->
    # ../../temp): the sockets live in the real directory, so the daemon is found through
    # DIR/current whichever version is current. check_private still vets that directory.
    if temp.is_symlink():
        temp = Path(os.path.realpath(temp))
    if len(str(temp / "control.sock")) > _MAX_SUN_PATH:
        digest = sha256(str(temp).encode()).hexdigest()[:16]
        temp = Path(tempfile.gettempdir()) / f"runyard-{os.getuid()}" / digest
    return Endpoints(temp, f"ipc://{temp}/control.sock", f"ipc://{temp}/events.sock")


def check_private(path: Path) -> None:
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise SocketDirError(f"{path}: not a directory")
    if st.st_uid != os.getuid():
        raise SocketDirError(f"{path}: owned by uid {st.st_uid}, not {os.getuid()}")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise SocketDirError(f"{path}: mode {stat.S_IMODE(st.st_mode):o}, must be 700")


def prepare_socket_dir(endpoints: Endpoints) -> None:
    """Create the socket directory (and the short fallback's parent) with mode 0700."""
    d = endpoints.directory
    if d.parent.name.startswith("runyard-"):
        d.parent.mkdir(mode=0o700, exist_ok=True)
        check_private(d.parent)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    check_private(d)
