"""``python -m runyard.daemon`` is the ``runyard`` command."""

import sys

from runyard.daemon.cli import main

sys.exit(main())
