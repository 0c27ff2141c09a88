"""Training configuration as data: one dataclass, defaults = the recipe the README reproduces."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finsent.runs import DEFAULT_MAX_LENGTH

PACKAGED_CONFIG_DIR = Path(__file__).resolve().parent / "config"


@dataclass
class TrainConfig:
    model_name: str | None = None  # hub id or local folder; None = packaged all-MiniLM-L6-v2
    data_path: str = "financial_phrasebank"
    output_dir: str | None = None  # None = runs/<version>
    agreement: str = "all"
    extra_train_agreement: str | None = None  # also train on this PhraseBank level minus every val/test sentence
    use_lora: bool = False
    lora_config: str = str(PACKAGED_CONFIG_DIR / "lora_config.json")
    batch_size: int = 16
    num_epochs: float = 3.0
    learning_rate: float | None = None  # None = 1e-3 with LoRA, 1e-4 for full fine-tuning
    max_length: int = DEFAULT_MAX_LENGTH
    seed: int = 42
    version: str | None = None  # None = next free v1, v2, ... among sibling runs
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    resume_from_checkpoint: str | None = None  # a checkpoint folder, or "auto" for the latest one
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    label_smoothing: float = 0.0
    early_stopping_patience: int = 2
    low_confidence: float = 0.6  # a correct prediction below this confidence is "Low Confidence"
    high_confidence: float = 0.9  # a wrong prediction at or above this confidence is a "High-Confidence Error"
    text_column: str = "text"
    label_column: str = "label"
    eval_batch_size: int = 64
    tracking_uri: str | None = None  # MLflow; None = sqlite:///<run folder's parent>/mlruns.db

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-3 if self.use_lora else 1e-4
