"""The three sentiment labels and their ids."""

from __future__ import annotations

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
LABEL2ID = {name: i for i, name in enumerate(LABELS)}
