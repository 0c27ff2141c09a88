"""What a training run learns from, as hooks the train loop calls in order: plain fine-tuning on gold labels here;
training.distill.DistillationRecipe overrides them for a student that learns from a teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finsent.data.splits import LabelledData, Splits


class Recipe:
    """Fine-tuning from gold labels: train on the train split, the stock transformers Trainer, nothing after."""

    def plan(self, splits: Splits, cfg, log) -> tuple[LabelledData, np.ndarray | None]:
        """The training sentences, and the teacher's logits for each where there is a teacher."""
        return splits.train, None

    def wrap_model(self, model):
        """The model the Trainer trains (a student with exit heads wraps it)."""
        return model

    def trainer_class(self):
        from transformers import Trainer

        return Trainer

    @property
    def keeps_extra_columns(self) -> bool:
        """Whether batches carry fields the model's forward() does not name (the teacher's logits)."""
        return False

    @property
    def held_out(self) -> list[str]:
        """Unlabeled sentences held out of training to choose thresholds on."""
        return []

    def record(self) -> dict:
        """What results.json records of the recipe beside the run's own settings."""
        return {}

    def after_write(self, out: Path, splits: Splits, val_logits: np.ndarray, temperature: float, model, log) -> None:
        """Work on the finished run folder (thresholds chosen on validation)."""
