"""Logging: the `finsent` logger (information on stdout, warnings and errors on stderr as one line each) and the
--log_level setup."""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("finsent")
LEVELS = ("critical", "error", "warning", "info", "debug")


class _Handler(logging.Handler):
    """Information to stdout, warnings and errors to stderr; the streams are looked up at each record, so that a
    redirection (or pytest's capture) made after start-up applies."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never fail the caller
            self.handleError(record)


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"finsent: {record.levelname.lower()}: {message}"
        return message


def setup_logging(level: str = "info") -> None:
    """Install the one handler (once) and set the level of every finsent logger."""
    if level.lower() not in LEVELS:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(LEVELS)}")
    if not any(isinstance(h, _Handler) for h in LOGGER.handlers):
        handler = _Handler()
        handler.setFormatter(_Format())
        LOGGER.addHandler(handler)
        LOGGER.propagate = False
    LOGGER.setLevel(level.upper())


def warn(message: str) -> None:
    """One warning line on stderr: `finsent: warning: <message>`."""
    LOGGER.warning(message)


setup_logging()
