"""TrainConfig validates itself, and the `finsent train` flags are generated from it (HfArgumentParser)."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from finsent.apps.cli import build_parser, main
from finsent.core.errors import FinsentError
from finsent.training.config import TrainConfig, parse_overrides

ROOT = Path(__file__).resolve().parents[2]
SEED_FLAGS = ["--model_name", "--data_path", "--output_dir", "--batch_size", "--num_epochs", "--use_lora"]


def parse(*argv):
    return build_parser().parse_args(["train", *argv])


def test_seed_flags_parse_as_in_the_readme():
    args = parse("--model_name", "m", "--data_path", "d.zip", "--output_dir", "out", "--batch_size", "8")
    assert (args.model_name, args.data_path, args.output_dir, args.batch_size) == ("m", ["d.zip"], "out", 8)
    assert parse("--num_epochs", "2", "--use_lora").use_lora is True
    assert parse("--use_lora", "--num_epochs", "2").num_epochs == 2.0
    assert parse().use_lora is False and parse().learning_rate is None and parse().max_train_samples is None
    assert parse("--use_lora", "false").use_lora is False
    fields = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in vars(parse("--extra_train_agreement", "none")).items() if k in fields})
    assert cfg.extra_train_agreement is None
    assert TrainConfig(extra_train_agreement="75").extra_train_agreement == "75"


def test_help_documents_every_field():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    text = train.format_help()
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name}" in text, f.name
        assert f.metadata.get("help"), f"{f.name} has no help text"
    assert all(flag in text for flag in SEED_FLAGS)


@pytest.mark.slow
def test_train_py_help_runs():
    proc = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and all(flag in proc.stdout for flag in SEED_FLAGS + ["--extra_train_agreement"])


INVALID = [
    ({"agreement": "90"}, "--agreement '90'"),
    ({"extra_train_agreement": "all"}, "--extra_train_agreement 'all'"),
    ({"batch_size": 0}, "--batch_size 0"),
    ({"eval_batch_size": -1}, "--eval_batch_size -1"),
    ({"num_epochs": 0.0}, "--num_epochs 0.0"),
    ({"max_length": 0}, "--max_length 0"),
    ({"learning_rate": -1e-3}, "--learning_rate -0.001"),
    ({"learning_rate": float("nan")}, "--learning_rate nan"),
    ({"max_train_samples": 0}, "--max_train_samples 0"),
    ({"num_layers": 0}, "--num_layers 0"),
    ({"label_smoothing": 1.0}, "--label_smoothing 1.0"),
    ({"warmup_ratio": -0.1}, "--warmup_ratio -0.1"),
    ({"weight_decay": -1.0}, "--weight_decay -1.0"),
    ({"early_stopping_patience": 0}, "--early_stopping_patience 0"),
    ({"high_confidence": 1.5}, "--high_confidence 1.5"),
    ({"low_confidence": 0.9, "high_confidence": 0.6}, "--low_confidence 0.9 must be below --high_confidence 0.6"),
    ({"text_column": ""}, "--text_column ''"),
    ({"precision": "int8"}, "--precision 'int8': must be one of auto, fp32, bf16, fp16"),
]


@pytest.mark.parametrize("kwargs,message", INVALID, ids=[m.split()[0] for _, m in INVALID])
def test_config_validates_itself(kwargs, message):
    with pytest.raises(FinsentError, match=message.replace("(", r"\(")) as e:
        TrainConfig(**kwargs)
    assert "\n" not in str(e.value)


def test_bad_flag_value_is_one_line_exit_2(capsys, tmp_path):
    assert main(["train", "--data_path", str(tmp_path / "x.csv"), "--batch_size", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["finsent: error: --batch_size 0: must be a positive whole number"]


def test_overrides_use_the_same_flags():
    assert parse_overrides(["use_lora=true", "agreement=75", "learning_rate=none", "max_length=64"]) == {
        "use_lora": True,
        "agreement": "75",
        "learning_rate": None,
        "max_length": 64,
    }
    with pytest.raises(FinsentError, match="agreement takes a choice"):
        parse_overrides(["agreement=90"])
