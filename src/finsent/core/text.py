"""Text helpers shared by every layer: Unicode validity and the sentence hash."""

from __future__ import annotations

import hashlib


def is_valid_unicode(text: str) -> bool:
    """False for strings the tokenizer cannot take, e.g. lone surrogates from JSON escapes or undecodable argv bytes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def sentence_hash(text: str) -> str:
    """A short, stable key for one sentence (the first 16 hex digits of its sha1)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
