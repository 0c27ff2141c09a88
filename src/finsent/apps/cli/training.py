"""`finsent train`, `finsent distill` and `finsent evaluate`."""

from __future__ import annotations

import argparse
from pathlib import Path

from finsent.apps.cli.flags import add_command, add_flags, from_args
from finsent.apps.configs import EvaluateConfig
from finsent.inference.factory import PredictorOptions
from finsent.training.config import TrainConfig, distill_arg_parser, train_arg_parser


def cmd_train(args: argparse.Namespace) -> int:
    cfg = from_args(TrainConfig, args)  # a bad value stops here, at once
    from finsent.training.trainer import train

    train(cfg)
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from finsent.training.distill import DistillConfig
    from finsent.training.trainer import train

    train(from_args(TrainConfig, args), distill=from_args(DistillConfig, args))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from finsent.data.corpus import load_data, load_entity_data
    from finsent.data.entities import ENTITY
    from finsent.inference.factory import build_predictor
    from finsent.runs.folder import EVALUATION_LOG, RESULTS, read_model_info
    from finsent.training.evaluation import evaluate_run

    cfg = from_args(EvaluateConfig, args)
    entity = read_model_info(cfg.model_dir).task == ENTITY  # an entity run is scored on (text, entity) pairs
    if entity:
        data = load_entity_data(cfg.data_path, cfg.text_column, cfg.label_column, cfg.entity_column)
    else:
        data = load_data(cfg.data_path, cfg.agreement, cfg.text_column, cfg.label_column)
    out = Path(cfg.output_dir) if cfg.output_dir else Path(cfg.model_dir) / "eval"
    predictor = build_predictor(cfg.model_dir, PredictorOptions(backend="torch", device=args.device))
    results = evaluate_run(predictor, data, out, cfg.low_confidence, cfg.high_confidence)
    print(
        f"accuracy {results['accuracy']:.4f}  macro-F1 {results['macro_f1']:.4f}  ECE {results['ece']:.4f} on {len(data)} "
        + ("(text, entity) pairs" if entity else "sentences")
    )
    if results.get("mixed_accuracy") is not None:
        print(f"  mixed_accuracy {results['mixed_accuracy']:.4f} on {results['n_mixed']} entities of mixed-label texts")
    for name, part in results.get("per_source", {}).items():
        print(
            f"  {name}: accuracy {part['accuracy']:.4f}  macro-F1 {part['macro_f1']:.4f} on {part['n_test']} sentences"
        )
    print(f"artifacts: {out}/ ({RESULTS}, {EVALUATION_LOG})")
    return 0


def add_commands(sub, common: argparse.ArgumentParser, train_flags: bool) -> None:
    # the training flags come from HfArgumentParser over TrainConfig (and DistillConfig): generated, like the rest
    train = [common, train_arg_parser(add_help=False)] if train_flags else [common]
    distill = [common, distill_arg_parser(add_help=False)] if train_flags else [common]
    train_help = "fine-tune an encoder on Financial PhraseBank and other corpora (LoRA or full)"
    add_command(sub, "train", train_help, cmd_train, parents=train)
    distill_help = "train a student on a teacher run's soft labels (gold train split + unlabeled sentences)"
    add_command(sub, "distill", distill_help, cmd_distill, parents=distill)
    evaluate_help = "evaluate a trained run folder on any labelled data, per source"
    p = add_command(sub, "evaluate", evaluate_help, cmd_evaluate, EvaluateConfig, parents=[common])
    add_flags(p, PredictorOptions, skip=tuple(f for f in PredictorOptions.__dataclass_fields__ if f != "device"))
