"""A fast model first, a slower one for the sentences it is unsure of (cascade, shallow early exit)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from finsent.core.errors import FinsentError
from finsent.core.metrics import margins
from finsent.inference.predictor import Predictor, Scores
from finsent.runs.folder import EARLY_EXIT_DIR, read_model_info


class CascadePredictor:
    """A fast student scores every sentence; a teacher re-scores those whose calibrated margin is below a threshold.

    As an early exit (`early_exit=True`) the student is a shallower model distilled from the full one (the teacher):
    the pair then speaks as the full model (its version, labels and metadata)."""

    extra_fields = ("answered_by",)

    def __init__(
        self, student: Predictor, teacher: Predictor, threshold: float | None = None, early_exit: bool = False
    ):
        stored = student.info.extra.get("cascade", {})
        if threshold is None:
            threshold = stored.get("margin_threshold")
        if threshold is None:
            raise FinsentError(
                f"{student.model_dir}: no cascade threshold stored (it comes from `finsent distill`); "
                "pass --cascade_threshold, e.g. 0.5"
            )
        if tuple(teacher.labels) != tuple(student.labels):
            raise FinsentError(f"{teacher.model_dir}: the teacher's labels {teacher.labels} differ from the student's")
        self.student, self.teacher, self.threshold = student, teacher, float(threshold)
        self.early_exit = early_exit
        self.primary = teacher if early_exit else student
        self.info = self.primary.info
        self.model_dir = self.primary.model_dir
        self.deferred = self.scored = 0

    @property
    def labels(self) -> tuple[str, ...]:
        return self.student.labels

    @property
    def backend_name(self) -> str:
        if self.early_exit:
            return f"early_exit({self.teacher.backend_name})"
        return f"cascade({self.student.backend_name}+{self.teacher.backend_name})"

    def score(self, texts: Sequence[str]) -> Scores:
        scores = self.student.score(texts)
        defer = np.flatnonzero(margins(scores.probs) < self.threshold) if len(texts) else np.zeros(0, dtype=int)
        first, second = (
            ("early_exit", "full") if self.early_exit else (self.student.info.version, self.teacher.info.version)
        )
        answered = [first] * len(texts)
        if len(defer):
            again = self.teacher.score([texts[i] for i in defer])
            scores.probs[defer] = again.probs
            scores.truncated[defer] = again.truncated
            for i in defer:
                answered[i] = second
        self.scored += len(texts)
        self.deferred += len(defer)
        return Scores(scores.probs, scores.truncated, self.labels, answered)

    def predict(self, texts: Sequence[str]) -> list[dict]:
        return self.score(texts).records()

    def metadata(self) -> dict:
        other, key = (self.student, "early_exit") if self.early_exit else (self.teacher, "cascade")
        share = self.deferred / self.scored if self.scored else None
        return {
            **self.primary.metadata(),
            "backend": self.backend_name,
            key: {
                ("model" if self.early_exit else "teacher"): other.metadata(),
                "margin_threshold": self.threshold,
                ("full_model_share" if self.early_exit else "deferred_share"): share,
            },
        }


def early_exit_dir(model_dir: str | Path, exit_dir: str | Path | None = None) -> Path:
    """The early-exit run of a full run (default <run>/early_exit), checked to be distilled from that run."""

    model_dir = Path(model_dir)
    exit_dir = Path(exit_dir) if exit_dir else model_dir / EARLY_EXIT_DIR
    how = f"train one with `finsent distill --teacher {model_dir} --num_layers 2 --output_dir {model_dir / EARLY_EXIT_DIR}`"
    if not exit_dir.is_dir():
        raise FinsentError(f"{exit_dir}: no early-exit model; {how}")
    source = read_model_info(exit_dir).extra.get("cascade", {}).get("teacher")
    if source and Path(source).is_dir() and Path(source).resolve() != model_dir.resolve():
        raise FinsentError(
            f"{exit_dir}: distilled from {source}, not {model_dir}, so its exit threshold was chosen against another "
            f"model; {how}"
        )
    return exit_dir
