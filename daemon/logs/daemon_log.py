"""``daemon_logger``: the daemon's own log, ``logs/runyard/daemon.log``."""

from __future__ import annotations

import logging
import logging.handlers
import os
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["daemon_logger"]


#: The daemon's log names services, paths and errors: the owner's alone.
DAEMON_LOG_MODE = 0o600


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose files are 0600 whatever the umask (each rotation opens anew)."""

    def _open(self):  # type: ignore[no-untyped-def]
        fd = os.open(
            self.baseFilename,
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
            DAEMON_LOG_MODE,
        )
        try:
            os.fchmod(fd, DAEMON_LOG_MODE)
            return open(fd, self.mode, encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(fd)
            raise


class _UTCFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def daemon_logger(logs_dir: Path, level: int = logging.INFO) -> logging.Logger:
    """The ``runyard`` logger, writing to ``logs/runyard/daemon.log`` (10 MiB × 3 backups).

    Idempotent: a second call replaces the handler it installed before.
    """
    log_dir = Path(logs_dir) / "runyard"
    log_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("runyard")
    for old in [h for h in logger.handlers if getattr(h, "_runyard_daemon_log", False)]:
        logger.removeHandler(old)
        old.close()
    handler = _PrivateRotatingFileHandler(
        log_dir / "daemon.log", maxBytes=10 * 1024 * 1024, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(_UTCFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._runyard_daemon_log = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    return logger
