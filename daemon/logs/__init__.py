"""Log capture for supervised services, built so that output written while the daemon is down
is kept, and fast enough that logging never becomes what limits a chatty service.

    child stdout/stderr ──► FIFO temp/fifo/{svc}.out|.err ──splice──► spool (tmpfs) ──► LogReader (asyncio, 1 MiB)
                                                                │
                          ServiceLog.take(stream, fd) ◄─────────┘
                            ├─ LineSplitter   the read's whole lines as one block, partial tail kept
                            ├─ LogFile        logs/{svc}/{svc}.log, prefix by one replace, one write
                            └─ LogRing        last N lines as chunks; LogLines made when asked

One module per piece: ``fifo`` (the FIFOs and keeper fds, ``LogPipes``, and the pipe budget
of an unprivileged daemon, ``PipeBudget``), ``splitter`` (``LineSplitter``), ``ring``
(``LogRing``), ``logfile`` (``LogFile``, ``format_stamp``),
``spool`` (``Spool``, the spool files and journal that keep a read line across a daemon kill),
``spool_home`` (where the spools live: a private tmpfs directory, or ``temp/fifo``),
``service_log`` (``ServiceLog``, the four above for one service), ``reader`` (``LogReader``,
the asyncio side) and ``daemon_log`` (``daemon_logger``, the daemon's own
``logs/runyard/daemon.log``). This package only re-exports them.
"""

from __future__ import annotations

from runyard.protocol.messages import LogLine

from .daemon_log import daemon_logger
from .fifo import ChildFds, LogPipes
from .logfile import LogFile, format_stamp
from .reader import LogReader, ReaderState, StreamMode
from .ring import LogRing
from .service_log import ServiceLog
from .splitter import LineSplitter
from .spool import Spool

__all__ = [
    "ChildFds",
    "LineSplitter",
    "LogFile",
    "LogLine",
    "LogPipes",
    "LogReader",
    "LogRing",
    "ReaderState",
    "ServiceLog",
    "Spool",
    "StreamMode",
    "daemon_logger",
    "format_stamp",
]
