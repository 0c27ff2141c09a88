"""The one error type users see: a single line, exit code 2, no traceback."""

from __future__ import annotations


class FinsentError(Exception):
    """Bad input or environment; the message names the file/line/key and what to do."""

    exit_code = 2
