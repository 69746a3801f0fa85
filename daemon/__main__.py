"""``python -m runyard.daemon`` is the ``runyard`` command.

A daemon's launch (``runyard up``, the systemd unit) starts with the cyclic GC off: its imports
and its boot make tens of thousands of objects and no garbage cycle worth a collection, and
``run_daemon`` turns the GC back on once the boot's first pass is spawned (issue 16, cold
start; see ``main.gc_after_boot``).
"""

import gc
import sys

if sys.argv[1:2] == ["daemon"]:
    gc.disable()

from runyard.daemon.cli import main  # after the GC is off: these are the imports

sys.exit(main())
