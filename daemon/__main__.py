"""``python -m daemon`` is the ``runyard`` command."""

import sys

from daemon.cli import main

sys.exit(main())
