"""``daemon_logger``: the daemon's own log, ``logs/runyard/daemon.log``."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["daemon_logger"]


#: The daemon's log names services, paths and errors: the owner's alone.
DAEMON_LOG_MODE = 0o600


class _PrivateRotatingFileHandler(logging.FileHandler):
    """``logging.handlers.RotatingFileHandler``'s rotation (before a record that would reach
    ``max_bytes``: ``.1 … .backups`` shifted, the file renamed to ``.1``), with files 0600
    whatever the umask (each rotation opens anew). Written out here because logging.handlers
    (with pickle and its C module, for the socket handlers) cost an idle daemon 0.2 MiB."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.max_bytes, self.backups = max_bytes, backups
        super().__init__(path, mode="a", encoding="utf-8")

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

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._rotation_due(record):
                self.doRollover()
            logging.FileHandler.emit(self, record)
        except Exception:
            self.handleError(record)

    def _rotation_due(self, record: logging.LogRecord) -> bool:
        base = self.baseFilename
        if os.path.exists(base) and not os.path.isfile(base):  # never rotate a non-file
            return False
        if self.stream is None:
            self.stream = self._open()
        self.stream.seek(0, 2)
        return self.stream.tell() + len(f"{self.format(record)}\n") >= self.max_bytes

    def doRollover(self) -> None:  # RotatingFileHandler's name (callers and tests use it)
        if self.stream:
            self.stream.close()
            self.stream = None  # type: ignore[assignment]
        base = self.baseFilename
        for i in range(self.backups, 0, -1):
            src = f"{base}.{i - 1}" if i > 1 else base
            dst = f"{base}.{i}"
            if os.path.exists(src):
                if os.path.exists(dst):
                    os.remove(dst)
                os.rename(src, dst)
        self.stream = self._open()


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
    handler = _PrivateRotatingFileHandler(log_dir / "daemon.log", 10 * 1024 * 1024, 3)
    handler.setFormatter(_UTCFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._runyard_daemon_log = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    return logger
