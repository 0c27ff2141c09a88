"""A thin wrapper over the transformers Trainer: train, keep the best checkpoint, write the run folder."""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from pathlib import Path

import numpy as np

from finsent.core.errors import FinsentError
from finsent.core.hardware import has_bf16
from finsent.core.logs import LOGGER
from finsent.data.corpus import describe, load_data, load_entity_data
from finsent.data.entities import ENTITY, EntityFormat
from finsent.data.labels import LABELS
from finsent.data.splits import LabelledData, Splits, add_to_train, check_no_leakage, source_counts, split_data
from finsent.inference.predictor import Predictor
from finsent.models import hub, loading, lora
from finsent.runs.folder import (
    CHECKPOINTS,
    DEFAULT_RUNS_ROOT,
    EVALUATION_LOG,
    RESULTS,
    ModelInfo,
    claim_run_dir,
    next_version,
    recorded_version,
    write_label_map,
    write_model_info,
    write_sentences,
    write_val_logits,
)
from finsent.training.calibration import calibrate
from finsent.training.config import TrainConfig
from finsent.training.distill import DistillationRecipe, DistillConfig, sentences_record
from finsent.training.evaluation import evaluate_logits, write_report
from finsent.training.recipe import Recipe
from finsent.training.tracking import log_run_safely


class EncodedDataset:
    """Tokenized sentences with labels, in the shape the Trainer's collator expects."""

    def __init__(
        self,
        part: LabelledData,
        tokenizer,
        max_length: int,
        teacher_logits: np.ndarray | None = None,
        fmt: EntityFormat | None = None,
    ):
        self.enc = tokenizer(part.inputs(fmt), truncation=True, max_length=max_length)
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


def precision_flags(precision: str = "auto") -> dict:
    """TrainingArguments flags for --precision on this machine; one line where the hardware cannot do it."""
    import torch

    gpu = torch.cuda.is_available()
    if precision == "auto":
        precision = "fp32" if not gpu else "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if not gpu and precision == "fp16":
        raise FinsentError("--precision fp16 needs a GPU; on a CPU use fp32, or bf16 where the CPU has AMX-BF16")
    if not gpu and precision == "bf16" and not has_bf16():
        raise FinsentError(
            "--precision bf16: this CPU has no bf16 instructions (AMX-BF16, AVX512-BF16 or ARM bf16); use fp32"
        )
    if gpu and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise FinsentError("--precision bf16: this GPU has no bf16; use fp16")
    flags = {"fp32": {}, "bf16": {"bf16": True}, "fp16": {"fp16": True}}[precision]
    return {**flags, "use_cpu": True} if not gpu else flags


def _precision_name(flags: dict) -> str:
    return "bf16" if flags.get("bf16") else "fp16" if flags.get("fp16") else "fp32"


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
        LOGGER.info(f"no checkpoint in {ckpt_dir}; starting from scratch")
    return last


def prepare_splits(cfg: TrainConfig) -> tuple[LabelledData, Splits, int]:
    """Phase 1: read the data, split it (per source), add the extra PhraseBank sentences, subsample, check leakage."""
    if cfg.task == ENTITY:
        data = load_entity_data(cfg.data_path, cfg.text_column, cfg.label_column, cfg.entity_column)
    else:
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
    return data, splits, n_extra


def build_model(cfg: TrainConfig, recipe: Recipe, lora_settings: dict | None, version: str, out: Path, log):
    """Phase 2: the tokenizer and the model to train (LoRA-wrapped where asked, wrapped again by the recipe)."""
    from transformers import set_seed

    set_seed(cfg.seed)
    model_path = hub.resolve_model_name(cfg.model_name)
    tokenizer = loading.load_tokenizer(model_path)
    model = loading.load_base_model(model_path, cfg.num_layers)
    if lora_settings is not None:
        model = lora.apply_lora(model, lora_settings, cfg.lora_config)
    model = recipe.wrap_model(model)
    params = lora.count_parameters(model)
    log(
        f"model {cfg.model_name or hub.DEFAULT_MODEL} ({'LoRA' if cfg.use_lora else 'full fine-tuning'}): "
        f"{params['trainable_params']:,} trainable of {params['total_params']:,} parameters ({params['trainable_percent']:.2f}%)"
    )
    name = cfg.model_name or hub.DEFAULT_MODEL
    fmt = EntityFormat(cfg.entity_style, tokenizer.sep_token or "[SEP]") if cfg.task == ENTITY else None
    info = ModelInfo(
        version,
        LABELS,
        cfg.max_length,
        name,
        cfg.use_lora,
        num_layers=cfg.num_layers,
        task=cfg.task,
        entity_input=fmt.to_json() if fmt else None,
    )
    write_model_info(out, info)
    return tokenizer, model, params, fmt


def training_arguments(cfg: TrainConfig, recipe: Recipe, ckpt_dir: Path):
    from transformers import TrainingArguments

    return TrainingArguments(
        # the Trainer drops every batch field its model's forward() does not name: the teacher's logits must stay
        remove_unused_columns=not recipe.keeps_extra_columns,
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
        **precision_flags(cfg.precision),
    )


def fit(cfg: TrainConfig, recipe: Recipe, model, tokenizer, plan: tuple, splits: Splits, out: Path, log, fmt=None):
    """Phase 3: the transformers Trainer on the recipe's training sentences (and teacher logits, where the plan has
    them); the best epoch by validation macro-F1."""
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback

    train_part, soft = plan
    ckpt_dir = out / CHECKPOINTS
    trainer = recipe.trainer_class()(
        model=model,
        args=training_arguments(cfg, recipe, ckpt_dir),
        train_dataset=EncodedDataset(train_part, tokenizer, cfg.max_length, soft, fmt),
        eval_dataset=EncodedDataset(splits.val, tokenizer, cfg.max_length, fmt=fmt),
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
    return trainer, time.perf_counter() - start


def _config_record(cfg: TrainConfig, lora_settings: dict | None) -> dict:
    import torch

    config = dataclasses.asdict(cfg)
    config.update(
        learning_rate=cfg.lr,
        lora=lora_settings,
        device="cuda" if torch.cuda.is_available() else "cpu",
        precision=_precision_name(precision_flags(cfg.precision)),
    )
    return config


@dataclasses.dataclass
class TrainedRun:
    """What the phases before writing know of a run: where it goes, its data and splits, its model's size, its time."""

    out: Path
    version: str
    data: LabelledData
    splits: Splits
    n_extra: int
    params: dict
    lora_settings: dict | None
    train_runtime: float
    fmt: EntityFormat | None = None  # an entity run's input format


def write_run(cfg, recipe, trainer, tokenizer, run: TrainedRun) -> tuple[dict, np.ndarray]:
    """Phase 4: save the best model, score validation and test through the one scoring path, write results.json,
    evaluation_log.csv, the validation logits, the calibration and the split record."""
    out, splits = run.out, run.splits
    trainer.model.save_pretrained(out)  # the best checkpoint's adapter (LoRA) or full model, safetensors
    tokenizer.save_pretrained(out)
    write_label_map(out, LABELS)
    # Score the run folder as users will load it (PEFT's in-memory model after the best-checkpoint reload can route
    # modules_to_save through the untrained originals).
    predictor = Predictor(out, "torch", batch_size=cfg.eval_batch_size, device=trainer.args.device.type)
    val_logits, _ = predictor.logits(splits.val.inputs(run.fmt))
    test_logits, _ = predictor.logits(splits.test.inputs(run.fmt))
    del predictor
    write_val_logits(out, val_logits, splits.val.labels)
    summary, rows = evaluate_logits(
        test_logits,
        splits.test.labels,
        splits.test.texts,
        run.version,
        cfg.low_confidence,
        cfg.high_confidence,
        sources=splits.test.sources,
        entities=splits.test.entities,
    )
    results = {
        "version": run.version,
        "task": cfg.task,
        "model_name": cfg.model_name or hub.DEFAULT_MODEL,
        "use_lora": cfg.use_lora,
        **summary,
        **run.params,
        "train_runtime_s": run.train_runtime,
        "epochs_run": trainer.state.epoch,
        "best_val_macro_f1": trainer.state.best_metric,
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test),
        "data": {
            **run.data.source,
            "seed": cfg.seed,
            "extra_train_agreement": cfg.extra_train_agreement,
            "n_extra_train": run.n_extra,
        },
        "config": _config_record(cfg, run.lora_settings),
        "labels": list(LABELS),
        **recipe.record(),
    }
    for name, counts in source_counts(splits).items():  # n_train, n_val, n_test beside each source's metrics
        results["per_source"].setdefault(name, {}).update(counts)
    results.update(calibrate(val_logits, splits.val.labels, test_logits, splits.test.labels))  # temperature for serving
    write_report(out, results, rows)
    write_sentences(out, sentences_record(splits, recipe.held_out))
    return results, val_logits


def _warn_if_diverged(cfg: TrainConfig, splits: Splits, val_logits: np.ndarray, log) -> None:
    never = [LABELS[c] for c in sorted(set(splits.val.labels) - set(val_logits.argmax(1).tolist()))]
    if never:  # e.g. LoRA rank 32 at lr 1e-3 diverged on one seed in bench/tune.py and predicted one class for all
        log(
            f"finsent: warning: the model never predicts {' or '.join(never)} on the {len(splits.val)} validation sentences, "
            f"though they include some: it diverged or has not learned {'that label' if len(never) == 1 else 'those labels'}; "
            f"retrain with a lower --learning_rate (this run: {cfg.lr:g}) or more epochs"
        )


def train(cfg: TrainConfig, log=None, distill: DistillConfig | None = None) -> dict:
    """Fine-tune (from gold labels, or distilled from a teacher run), evaluate on the test split, write the run folder:
    splits, model, fit, write the run, then the recipe's own work on it (thresholds)."""
    log = log or LOGGER.info
    recipe = Recipe() if distill is None else DistillationRecipe(distill)
    precision_flags(cfg.precision)  # the hardware can do it: checked before any data is read
    data, splits, n_extra = prepare_splits(cfg)
    plan = recipe.plan(splits, cfg, log)  # a distillation checks its teacher here, before any folder is made
    lora_settings = lora.read_lora_config(cfg.lora_config) if cfg.use_lora else None  # a bad file: no folder either
    out, version = resolve_output(cfg)
    out.mkdir(parents=True, exist_ok=True)
    log(
        f"finsent {version}: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test sentences "
        f"from {describe(data)} (agreement {cfg.agreement}; {data.source['duplicates_removed']} duplicates, "
        f"{data.source['conflicts_removed']} conflicting sentences removed)"
    )
    tokenizer, model, params, fmt = build_model(cfg, recipe, lora_settings, version, out, log)
    trainer, train_runtime = fit(cfg, recipe, model, tokenizer, plan, splits, out, log, fmt)
    if not trainer.is_world_process_zero():
        return {}
    run = TrainedRun(out, version, data, splits, n_extra, params, lora_settings, train_runtime, fmt)
    results, val_logits = write_run(cfg, recipe, trainer, tokenizer, run)
    recipe.after_write(out, splits, val_logits, results["temperature"], trainer.model, log)
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # the run finished: the best model is saved above
    log(
        f"test accuracy {results['accuracy']:.4f}  macro-F1 {results['macro_f1']:.4f}  ECE {results['ece']:.4f}  "
        f"avg confidence {results['avg_confidence']:.3f}  training {train_runtime:.0f}s"
    )
    if results.get("mixed_accuracy") is not None:
        log(
            f"  mixed_accuracy {results['mixed_accuracy']:.4f} on {results['n_mixed']} entities of texts whose entities disagree"
        )
    per_source = results["per_source"] if len(results["per_source"]) > 1 else {}  # one source: the pooled line
    for name, part in ((n, p) for n, p in per_source.items() if "accuracy" in p):  # a source may have no test rows
        log(
            f"  {name}: test accuracy {part['accuracy']:.4f}  macro-F1 {part['macro_f1']:.4f}  ({part['n_test']} sentences)"
        )
    _warn_if_diverged(cfg, splits, val_logits, log)
    log(f"artifacts: {out}/ ({RESULTS}, {EVALUATION_LOG}, {'adapter' if cfg.use_lora else 'model'}, tokenizer)")
    log_run_safely(out, cfg.tracking_uri, log)  # MLflow; a tracking failure only warns
    return results
