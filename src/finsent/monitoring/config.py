"""Monitoring thresholds as data: a dataclass that validates itself, read from JSON or YAML (`--thresholds FILE`)."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

from finsent.core.errors import FinsentError

WINDOW = re.compile(r"^\s*(\d+)\s*(s|sec|min|h|d|w)?\s*$", re.IGNORECASE)
UNITS = {"s": "s", "sec": "s", "min": "min", "h": "h", "d": "D", "w": "W"}


@dataclass
class MonitorThresholds:
    """When a window counts as drifting, and how the estimate's interval and the novelty threshold are set."""

    alpha: float = 0.001  # p-value below which a test (label shares, KS, novelty) flags a window
    psi: float = 0.25  # PSI above which confidence or margin counts as shifted (0.25: the usual "major shift")
    # effect sizes a test must also reach: on large windows (a day of traffic) tiny differences are significant
    ks_min: float = 0.1  # KS statistic (confidence, margin, text length)
    share_min: float = 0.05  # the largest change of a predicted label's share
    novelty_min: float = 0.05  # novelty share above validation's
    novelty_quantile: float = 0.95  # validation sentences nearer a training sentence than the threshold: this share
    min_rows: int = 30  # windows with fewer rows get estimates but no drift tests
    draws: int = 200  # label draws for the estimate's interval
    level: float = 0.95  # the interval's coverage
    reference_sentences: int = 5000  # training sentences embedded for novelty (a seeded sample where there are more)
    top_terms: int = 10
    examples: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # types first, so that the ranges below compare numbers
            value, whole = getattr(self, f.name), f.type == "int"
            if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
                raise FinsentError(
                    f"thresholds: {f.name} = {value!r} must be {'a whole number' if whole else 'a number'}"
                )
        checks = (
            ("alpha", 0 < self.alpha < 1, "in (0, 1)"),
            ("psi", self.psi > 0, "above 0"),
            ("ks_min", 0 <= self.ks_min < 1, "in [0, 1)"),
            ("share_min", 0 <= self.share_min < 1, "in [0, 1)"),
            ("novelty_min", 0 <= self.novelty_min < 1, "in [0, 1)"),
            ("seed", self.seed >= 0, "0 or more"),
            ("novelty_quantile", 0 < self.novelty_quantile < 1, "in (0, 1)"),
            ("min_rows", self.min_rows >= 1, "at least 1"),
            ("draws", self.draws >= 10, "at least 10"),
            ("level", 0 < self.level < 1, "in (0, 1)"),
            ("reference_sentences", self.reference_sentences >= 10, "at least 10"),
            ("top_terms", self.top_terms >= 0, "0 or more"),
            ("examples", self.examples >= 0, "0 or more"),
        )
        for name, ok, expect in checks:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok:
                raise FinsentError(f"thresholds: {name} = {value!r} must be {expect}")

    @classmethod
    def from_file(cls, path: str | Path | None) -> MonitorThresholds:
        if path is None:
            return cls()
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                spec = yaml.safe_load(text)
            else:
                spec = json.loads(text)
        except FileNotFoundError:
            raise FinsentError(f"{path}: no such thresholds file (--thresholds)") from None
        except Exception as e:  # noqa: BLE001 - JSON, YAML and decoding errors alike
            raise FinsentError(f"{path}: not a valid thresholds file ({str(e).splitlines()[0]})") from None
        if not isinstance(spec, dict):
            raise FinsentError(f'{path}: a thresholds file is an object of names and values, e.g. {{"alpha": 0.01}}')
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise FinsentError(f"{path}: unknown threshold {unknown[0]!r}; known: {', '.join(sorted(known))}")
        try:
            return cls(**spec)
        except FinsentError as e:
            raise FinsentError(f"{path}: {e}") from None


def parse_window(value: str) -> tuple[str, int | str]:
    """('rows', N) for a count of rows, ('time', pandas frequency) for 30min, 1h, 1d or 1w."""
    match = WINDOW.match(str(value))
    if not match or int(match.group(1)) < 1:
        raise FinsentError(f"--window {value!r}: give a number of rows (e.g. 500) or a time span (30min, 1h, 1d, 1w)")
    n, unit = int(match.group(1)), match.group(2)
    if unit is None:
        return "rows", n
    return "time", f"{n}{UNITS[unit.lower()]}"


def parse_fail_on(values: list[str] | None) -> dict:
    """--fail_on drift and/or accuracy_below=0.9: {"drift": bool, "accuracy_below": float | None}."""
    out: dict = {"drift": False, "accuracy_below": None}
    for value in values or []:
        key, _, number = value.partition("=")
        if key == "drift" and not number:
            out["drift"] = True
            continue
        if key == "accuracy_below":
            try:
                out["accuracy_below"] = float(number)
            except ValueError:
                pass
            else:
                if 0 < out["accuracy_below"] <= 1:
                    continue
        raise FinsentError(f"--fail_on {value!r}: expected drift or accuracy_below=X with X in (0, 1]")
    return out
