"""A thin wrapper over the transformers Trainer: train, keep the best checkpoint, write the run folder."""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from pathlib import Path

import numpy as np

from finsent import distill as kd
from finsent import hub, modeling
from finsent.calibration import calibrate
from finsent.data import LABELS, LabelledData, Splits, add_to_train, check_no_leakage, load_data, split_data
from finsent.distill import DistillConfig
from finsent.errors import FinsentError
from finsent.evaluation import evaluate_logits, write_report
from finsent.inference import Predictor
from finsent.runs import (
    CHECKPOINTS,
    DEFAULT_RUNS_ROOT,
    EVALUATION_LOG,
    RESULTS,
    ModelInfo,
    claim_run_dir,
    next_version,
    read_model_info,
    read_results,
    recorded_version,
    write_label_map,
    write_model_info,
    write_sentences,
    write_val_logits,
)
from finsent.tracking import log_run_safely
from finsent.training_args import TrainConfig


class EncodedDataset:
    """Tokenized sentences with labels, in the shape the Trainer's collator expects."""

    def __init__(self, part: LabelledData, tokenizer, max_length: int, teacher_logits: np.ndarray | None = None):
        self.enc = tokenizer(part.texts, truncation=True, max_length=max_length)
        self.labels = part.labels  # -100: no gold label (an unlabeled sentence in distillation)
        self.teacher_logits = teacher_logits

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = {
            "input_ids": self.enc["input_ids"][i],
            "attention_mask": self.enc["attention_mask"][i],
            "labels": self.labels[i],
        }
        if self.teacher_logits is not None:
            item["teacher_logits"] = self.teacher_logits[i].tolist()
        return item


def resolve_output(cfg: TrainConfig) -> tuple[Path, str]:
    """Output folder and run version: a freshly claimed runs/vN, or the version of a run being resumed."""
    if cfg.output_dir is None:
        if cfg.version:
            return DEFAULT_RUNS_ROOT / cfg.version, cfg.version
        return claim_run_dir(DEFAULT_RUNS_ROOT)
    out = Path(cfg.output_dir)
    if cfg.version:
        return out, cfg.version
    return out, recorded_version(out) or next_version(out.resolve().parent)


def _subsample(part: LabelledData, n: int | None, seed: int) -> LabelledData:
    if n is None or n >= len(part):
        return part
    idx = sorted(random.Random(seed).sample(range(len(part)), n))
    return part.subset(idx)


def _precision_flags() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"use_cpu": True}
    return {"bf16": True} if torch.cuda.is_bf16_supported() else {"fp16": True}


def _compute_metrics(pred) -> dict:
    from sklearn.metrics import f1_score

    y_pred = np.asarray(pred.predictions).argmax(-1)
    return {
        "accuracy": float((y_pred == pred.label_ids).mean()),
        "macro_f1": float(f1_score(pred.label_ids, y_pred, average="macro")),
    }


def _resume_path(cfg: TrainConfig, ckpt_dir: Path) -> str | None:
    if not cfg.resume_from_checkpoint:
        return None
    if cfg.resume_from_checkpoint != "auto":
        path = Path(cfg.resume_from_checkpoint)
        if not path.is_dir():
            raise FinsentError(
                f"{path}: no such checkpoint folder; pass --resume_from_checkpoint auto or a {ckpt_dir}/checkpoint-N folder"
            )
        return str(path)
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last is None:
        print(f"no checkpoint in {ckpt_dir}; starting from scratch")
    return last


def _distill_plan(distill: DistillConfig, splits: Splits, cfg: TrainConfig, log) -> dict:
    """The student's training sentences (gold train split + unlabeled ones) with the teacher's logits for each."""
    teacher_dir = Path(distill.teacher)
    teacher_results = read_results(teacher_dir)
    kd.check_teacher_split(teacher_dir, splits)
    unlabeled, threshold_texts, counts = kd.unlabeled_sentences(splits, distill, cfg.data_path, cfg.seed)
    train = LabelledData(splits.train.texts + unlabeled, splits.train.labels + [-100] * len(unlabeled))
    log(
        f"distilling from {teacher_dir} ({teacher_results.get('model_name')}, test accuracy "
        f"{teacher_results.get('accuracy', float('nan')):.4f}): {len(splits.train)} labelled + {len(unlabeled)} "
        f"unlabeled sentences, alpha {distill.alpha}, T {distill.distill_temperature}"
    )
    start = time.perf_counter()
    soft = kd.teacher_logits(teacher_dir, train.texts)
    log(f"teacher logits for {len(train)} sentences in {time.perf_counter() - start:.0f}s (cached in {teacher_dir})")
    teacher = {k: teacher_results.get(k) for k in ("version", "model_name", "use_lora", "accuracy", "macro_f1")}
    record = {**dataclasses.asdict(distill), "n_labelled": len(splits.train), "unlabeled_counts": counts}
    return {
        "train": train,
        "teacher_logits": soft,
        "teacher": {"run": str(teacher_dir), **teacher},
        "record": record,
        "threshold_texts": threshold_texts,
    }


def _store_cascade(
    out: Path, distill: DistillConfig, splits: Splits, val_logits, temperature: float, held: list[str], log
) -> None:
    """Choose the cascade's margin threshold on validation (and the held-out unlabeled sentences) and keep it in the
    student's finsent_model.json."""
    from finsent.inference import Predictor
    from finsent.metrics import softmax

    probs = softmax(val_logits, temperature)
    if held:  # the trained student, as it will serve (its temperature included)
        probs = np.concatenate([probs, Predictor(out).score(held).probs])
    teacher_pred = kd.teacher_logits(distill.teacher, splits.val.texts + held).argmax(1)
    choice = kd.cascade_threshold(probs, teacher_pred, distill.cascade_agreement)
    choice["threshold_sentences"] = len(probs)
    info = read_model_info(out)
    write_model_info(
        out, dataclasses.replace(info, extra={**info.extra, "cascade": {"teacher": distill.teacher, **choice}})
    )
    log(
        f"cascade: margin < {choice['margin_threshold']:.3f} defers {choice['val_deferred']:.1%} of "
        f"{len(probs)} validation{' and held-out' if held else ''} sentences to the teacher and agrees with it on "
        f"{choice['val_agreement']:.1%}"
    )


def _store_exits(out: Path, distill: DistillConfig, texts: list[str], num_layers: int, log) -> None:
    """Choose each exit's margin threshold on validation (and the held-out unlabeled sentences) against the final
    layer, and keep them in the run's finsent_model.json."""
    from finsent import early_exit
    from finsent.metrics import softmax

    *exits, final = early_exit.exit_logits(out, texts)
    probs = [softmax(e) for e in exits]
    final_pred = final.argmax(1)
    thresholds = early_exit.choose_thresholds(probs, final_pred, distill.cascade_agreement)
    where = early_exit.route(probs, thresholds)
    labels = np.stack([p.argmax(1) for p in probs] + [final_pred])[where, np.arange(len(texts))]
    shares = [float(np.mean(where == i)) for i in range(len(probs))]
    spec = {
        "layers": list(distill.exit_layers),
        "thresholds": thresholds,
        "num_layers": num_layers,
        "agreement_target": distill.cascade_agreement,
        "threshold_sentences": len(texts),
        "val_exit_shares": shares,
        "val_agreement": float(np.mean(labels == final_pred)),
    }
    info = read_model_info(out)
    write_model_info(out, dataclasses.replace(info, extra={**info.extra, "exits": spec}))
    said = ", ".join(f"layer {k} margin >= {t:.3f}: {s:.1%}" for k, t, s in zip(spec["layers"], thresholds, shares))
    log(
        f"early exits on {len(texts)} validation and held-out sentences: {said} answered early; "
        f"agreement with the final layer {spec['val_agreement']:.2%}"
    )


def train(cfg: TrainConfig, log=print, distill: DistillConfig | None = None) -> dict:
    """Fine-tune (from gold labels, or distilled from a teacher run), evaluate on the test split, write the run folder."""
    import torch
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer, TrainingArguments, set_seed

    data = load_data(cfg.data_path, cfg.agreement, cfg.text_column, cfg.label_column)
    splits = split_data(data, cfg.seed)
    n_extra = 0
    if cfg.extra_train_agreement and data.source["format"] == "phrasebank":
        extra = load_data(cfg.data_path, cfg.extra_train_agreement, cfg.text_column, cfg.label_column)
        splits, n_extra = add_to_train(splits, extra)
    splits = Splits(
        _subsample(splits.train, cfg.max_train_samples, cfg.seed),
        _subsample(splits.val, cfg.max_eval_samples, cfg.seed),
        _subsample(splits.test, cfg.max_eval_samples, cfg.seed),
    )
    check_no_leakage(splits)
    student = _distill_plan(distill, splits, cfg, log) if distill is not None else None
    lora_settings = modeling.read_lora_config(cfg.lora_config) if cfg.use_lora else None
    out, version = resolve_output(cfg)
    out.mkdir(parents=True, exist_ok=True)
    log(
        f"finsent {version}: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test sentences "
        f"from {data.source['path']} (agreement {cfg.agreement}; {data.source['duplicates_removed']} duplicates, "
        f"{data.source['conflicts_removed']} conflicting sentences removed)"
    )

    set_seed(cfg.seed)
    model_path = hub.resolve_model_name(cfg.model_name)
    tokenizer = modeling.load_tokenizer(model_path)
    model = modeling.load_base_model(model_path, cfg.num_layers)
    if lora_settings is not None:
        model = modeling.apply_lora(model, lora_settings, cfg.lora_config)
    if distill is not None and distill.exit_layers:
        from finsent import early_exit

        config = model.config
        early_exit.check_layers(distill.exit_layers, int(config.num_hidden_layers), config.model_type)
        heads = early_exit.ExitHeads(distill.exit_layers, int(config.hidden_size), len(LABELS))
        model = early_exit.MultiExitModel(model, heads)
    params = modeling.count_parameters(model)
    log(
        f"model {cfg.model_name or hub.DEFAULT_MODEL} ({'LoRA' if cfg.use_lora else 'full fine-tuning'}): "
        f"{params['trainable_params']:,} trainable of {params['total_params']:,} parameters ({params['trainable_percent']:.2f}%)"
    )
    write_model_info(
        out,
        ModelInfo(
            version=version,
            labels=LABELS,
            max_length=cfg.max_length,
            model_name=cfg.model_name or hub.DEFAULT_MODEL,
            use_lora=cfg.use_lora,
            num_layers=cfg.num_layers,
        ),
    )

    ckpt_dir = out / CHECKPOINTS
    args = TrainingArguments(
        # the Trainer drops every batch field its model's forward() does not name: the teacher's logits must stay
        remove_unused_columns=distill is None,
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.num_epochs,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,
        lr_scheduler_type="linear",
        label_smoothing_factor=cfg.label_smoothing,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        logging_strategy="epoch",
        train_sampling_strategy="group_by_length",
        report_to=[],
        seed=cfg.seed,
        data_seed=cfg.seed,
        **_precision_flags(),
    )
    trainer_cls = (
        Trainer
        if distill is None
        else kd.trainer_class(distill.alpha, distill.distill_temperature, distill.exit_follow)
    )
    train_part, soft = (splits.train, None) if student is None else (student["train"], student["teacher_logits"])
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=EncodedDataset(train_part, tokenizer, cfg.max_length, soft),
        eval_dataset=EncodedDataset(splits.val, tokenizer, cfg.max_length),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=_compute_metrics,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience)],
    )
    resume = _resume_path(cfg, ckpt_dir)
    if resume:
        log(f"resuming from {resume}")
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    train_runtime = time.perf_counter() - start

    if not trainer.is_world_process_zero():
        return {}
    trainer.model.save_pretrained(out)  # the best checkpoint's adapter (LoRA) or full model, safetensors
    tokenizer.save_pretrained(out)
    write_label_map(out, LABELS)

    # Score the run folder as users will load it, through the one scoring path (PEFT's in-memory model after the
    # best-checkpoint reload can route modules_to_save through the untrained originals).
    predictor = Predictor(out, "torch", batch_size=cfg.eval_batch_size, device=trainer.args.device.type)
    val_logits, _ = predictor.logits(splits.val.texts)
    test_logits, _ = predictor.logits(splits.test.texts)
    del predictor
    write_val_logits(out, val_logits, splits.val.labels)

    summary, rows = evaluate_logits(
        test_logits, splits.test.labels, splits.test.texts, version, cfg.low_confidence, cfg.high_confidence
    )
    config = dataclasses.asdict(cfg)
    config.update(
        learning_rate=cfg.lr,
        lora=lora_settings,
        device="cuda" if torch.cuda.is_available() else "cpu",
        precision=next(iter(_precision_flags())).replace("use_cpu", "fp32"),
    )
    results = {
        "version": version,
        "model_name": cfg.model_name or hub.DEFAULT_MODEL,
        "use_lora": cfg.use_lora,
        **summary,
        **params,
        "train_runtime_s": train_runtime,
        "epochs_run": trainer.state.epoch,
        "best_val_macro_f1": trainer.state.best_metric,
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test),
        "data": {
            **data.source,
            "seed": cfg.seed,
            "extra_train_agreement": cfg.extra_train_agreement,
            "n_extra_train": n_extra,
        },
        "config": config,
        "labels": list(LABELS),
    }
    if student is not None:
        results["distillation"] = student["record"]
        results["teacher"] = student["teacher"]
    results.update(calibrate(val_logits, splits.val.labels, test_logits, splits.test.labels))  # temperature for serving
    write_report(out, results, rows)
    write_sentences(out, kd.sentences_record(splits, student and student["threshold_texts"]))
    if student is not None:
        _store_cascade(out, distill, splits, val_logits, results["temperature"], student["threshold_texts"], log)
    if distill is not None and distill.exit_layers:
        texts = splits.val.texts + student["threshold_texts"]
        _store_exits(out, distill, texts, int(trainer.model.config.num_hidden_layers), log)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # the run finished: the best model is saved above
    log(
        f"test accuracy {results['accuracy']:.4f}  macro-F1 {results['macro_f1']:.4f}  ECE {results['ece']:.4f}  "
        f"avg confidence {results['avg_confidence']:.3f}  training {train_runtime:.0f}s"
    )
    never = [LABELS[c] for c in sorted(set(splits.val.labels) - set(val_logits.argmax(1).tolist()))]
    if never:  # e.g. LoRA rank 32 at lr 1e-3 diverged on one seed in bench/tune.py and predicted one class for all
        log(
            f"finsent: warning: the model never predicts {' or '.join(never)} on the {len(splits.val)} validation sentences, "
            f"though they include some: it diverged or has not learned {'that label' if len(never) == 1 else 'those labels'}; "
            f"retrain with a lower --learning_rate (this run: {cfg.lr:g}) or more epochs"
        )
    log(f"artifacts: {out}/ ({RESULTS}, {EVALUATION_LOG}, {'adapter' if cfg.use_lora else 'model'}, tokenizer)")
    log_run_safely(out, cfg.tracking_uri, log)  # MLflow; a tracking failure only warns
    return results
