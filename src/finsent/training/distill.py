"""Knowledge distillation: a student learns from a teacher run's soft labels (cached teacher logits)."""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finsent.core.errors import FinsentError
from finsent.core.metrics import softmax
from finsent.core.text import sentence_hash
from finsent.data import tables
from finsent.data.corpus import AGREEMENT_FILES, load_data
from finsent.data.entities import EntityFormat
from finsent.data.labels import LABELS
from finsent.data.splits import LabelledData, Splits, normalise
from finsent.runs import folder
from finsent.training.recipe import Recipe


@dataclass
class DistillConfig:
    """What `finsent distill` adds to the student's training recipe."""

    teacher: str = field(metadata={"help": "the teacher's run folder (a `finsent train` output)"})
    alpha: float = field(
        default=0.5, metadata={"help": "weight of the gold-label loss; 1 - alpha goes to the teacher (default: 0.5)"}
    )
    distill_temperature: float = field(
        default=2.0, metadata={"help": "softmax temperature of the teacher/student KL term (default: 2.0)"}
    )
    unlabeled_agreement: str = field(
        default="50",
        metadata={
            "help": "also learn the teacher's labels on the PhraseBank sentences of this agreement level that are in "
            "none of the student's splits; 'none' to switch off (default: 50)",
            "choices": ["50", "66", "75", "all", "none"],
        },
    )
    unlabeled: str | None = field(
        default=None,
        metadata={"help": "a file of unlabeled sentences (.txt one a line, or a table with a text column)"},
    )
    max_unlabeled: int | None = field(
        default=None, metadata={"help": "use at most this many unlabeled sentences, drawn by --seed (default: all)"}
    )
    threshold_sentences: int = field(
        default=0,
        metadata={
            "help": "hold this many of the unlabeled sentences out of training, drawn by --seed, and choose the "
            "cascade threshold on them (labelled by the teacher) together with the validation split (default: 0)"
        },
    )
    cascade_agreement: float = field(
        default=0.995,
        metadata={
            "help": "the cascade threshold is the smallest margin at which the cascade agrees with the teacher "
            "on at least this share of validation sentences; with --exit_layers, each exit's threshold is the "
            "smallest margin at which it agrees with the student's final layer on this share (default: 0.995)"
        },
    )
    exit_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "train early exits with the student after these encoder layers (e.g. 1 3): each learns from the "
            "teacher and the final layer; `predict --early_exit` then lets confident sentences out there",
            "nargs": "+",
        },
    )
    exit_follow: float = field(
        default=1.0,
        metadata={
            "help": "with --exit_layers: the share of each exit's loss that follows the student's final layer (which "
            "learns from the teacher); the rest learns from the teacher and the gold labels directly (default: 1: "
            "exits that only follow the final layer agree with it best, bench/results/early_exit.md)"
        },
    )

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise FinsentError(f"--alpha {self.alpha}: must be between 0 and 1")
        if not self.distill_temperature > 0:
            raise FinsentError(f"--distill_temperature {self.distill_temperature}: must be positive")
        if self.max_unlabeled is not None and self.max_unlabeled < 0:
            raise FinsentError(f"--max_unlabeled {self.max_unlabeled}: must be 0 or more")
        if self.threshold_sentences < 0:
            raise FinsentError(f"--threshold_sentences {self.threshold_sentences}: must be 0 or more")
        if not 0 < self.cascade_agreement <= 1:
            raise FinsentError(f"--cascade_agreement {self.cascade_agreement}: must be in (0, 1]")
        if self.exit_layers is not None and (
            not self.exit_layers or sorted(set(self.exit_layers)) != list(self.exit_layers) or self.exit_layers[0] < 1
        ):
            raise FinsentError(
                f"--exit_layers {' '.join(map(str, self.exit_layers or []))}: give increasing layer numbers from 1, e.g. 1 3"
            )
        if not 0 <= self.exit_follow <= 1:
            raise FinsentError(f"--exit_follow {self.exit_follow}: must be between 0 and 1")
        if self.unlabeled_agreement not in (*AGREEMENT_FILES, "none"):
            raise FinsentError(f"--unlabeled_agreement {self.unlabeled_agreement!r}: expected 50, 66, 75, all or none")


def unlabeled_sentences(
    splits: Splits, dcfg: DistillConfig, data_path: str | list[str], seed: int
) -> tuple[list[str], list[str], dict]:
    """Sentences to learn the teacher's labels on (PhraseBank and/or a user's file, minus every student sentence),
    the ones held out of training to choose the cascade threshold on (--threshold_sentences), and their counts."""
    held = {normalise(t) for part in (splits.train, splits.val, splits.test) for t in part.texts}
    texts: list[str] = []
    counts: dict = {}
    specs = [data_path] if isinstance(data_path, (str, Path)) else list(data_path)
    for spec in specs if dcfg.unlabeled_agreement != "none" else []:
        given = load_data(spec, dcfg.unlabeled_agreement)
        for source in given.source.get("sources", [given.source]):  # a mix file names its sources
            if source.get("format") != "phrasebank":  # other corpora and users' tables have no agreement levels
                continue
            level = load_data(source["path"], dcfg.unlabeled_agreement)
            new = [t for t in level.texts if normalise(t) not in held]
            counts["phrasebank"] = len(new)
            texts += new
            held |= {normalise(t) for t in new}
    if dcfg.unlabeled:
        hint = "--unlabeled takes a .txt file (one sentence a line) or a table with a text column"
        rows = tables.read_rows(dcfg.unlabeled, ("text",), hint=hint)
        own = (str(r.fields["text"]).strip() for r in rows if r.fields.get("text"))
        new = list(dict.fromkeys(t for t in own if t and normalise(t) not in held))
        counts["file"] = len(new)
        texts += new
    if dcfg.max_unlabeled is not None and len(texts) > dcfg.max_unlabeled:
        keep = sorted(random.Random(seed).sample(range(len(texts)), dcfg.max_unlabeled))
        texts = [texts[i] for i in keep]
    threshold: list[str] = []
    if dcfg.threshold_sentences:
        if dcfg.threshold_sentences >= len(texts):
            raise FinsentError(
                f"--threshold_sentences {dcfg.threshold_sentences}: only {len(texts)} unlabeled sentences; hold out fewer"
            )
        out = set(random.Random(seed + 1).sample(range(len(texts)), dcfg.threshold_sentences))
        threshold = [t for i, t in enumerate(texts) if i in out]
        texts = [t for i, t in enumerate(texts) if i not in out]
    counts["threshold"] = len(threshold)
    counts["used"] = len(texts)
    return texts, threshold, counts


def check_teacher_split(teacher_dir: Path, splits: Splits) -> None:
    """Refuse a teacher that trained on the student's validation or test sentences, or chose its epoch on its test."""
    seen = folder.read_sentences(teacher_dir)
    if seen is None:
        raise FinsentError(
            f"{teacher_dir}: no {folder.SENTENCES}, so the sentences the teacher learned from are unknown; "
            "retrain the teacher with this version of finsent"
        )
    val = {sentence_hash(t) for t in splits.val.texts}
    test = {sentence_hash(t) for t in splits.test.texts}
    trained = set(seen.get("train", [])) & (val | test)
    selected = set(seen.get("val", [])) & test
    if trained or selected:
        raise FinsentError(
            f"{teacher_dir}: the teacher trained on {len(trained)} of the student's {len(val | test)} validation/test "
            f"sentences and chose its epoch on {len(selected)} of its test sentences, which would make the student's "
            "scores meaningless; train the teacher on the student's split (same --data_path, --agreement and --seed) "
            "and distill from that run"
        )


def sentences_record(splits: Splits, threshold: list[str] | None = None) -> dict:
    """What a run folder keeps of its split: sentence hashes per part (for the distillation leakage guard), and of
    the unlabeled sentences a distilled run held out to choose its cascade threshold on."""
    return {
        "hash": "sha1[:16] of the UTF-8 sentence",
        **{name: list(dict.fromkeys(map(sentence_hash, part.texts))) for name, part in vars(splits).items()},
        **({"threshold": [sentence_hash(t) for t in threshold]} if threshold else {}),
    }


def run_inputs(run_dir: str | Path, part: LabelledData) -> list[str]:
    """What a run's model reads for a part: its texts, or its (text, entity) pairs in the run's own entity format."""
    return part.inputs(EntityFormat.from_json(folder.read_model_info(run_dir).entity_input))


def teacher_logits(
    teacher_dir: str | Path, texts: list[str], device: str = "cpu", batch_size: int | None = None
) -> np.ndarray:
    """The teacher's raw logits for texts, computed once per sentence and cached beside the teacher's run."""
    from finsent.inference.predictor import Predictor
    from finsent.runs.folder import weights_digest

    teacher_dir = Path(teacher_dir)
    digest = weights_digest(teacher_dir) or ""
    keys = [sentence_hash(t) for t in texts]
    known = folder.read_teacher_logits(teacher_dir, digest)
    todo = {k: t for k, t in zip(keys, texts) if k not in known}
    if todo:
        predictor = Predictor(teacher_dir, batch_size=batch_size, device=device)
        logits, _ = predictor.logits(list(todo.values()))
        known.update(zip(todo, logits))
        folder.write_teacher_logits(teacher_dir, list(known), np.stack(list(known.values())), digest)
    return np.stack([known[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, 3), np.float32)


def kd_loss(student_logits, labels, teacher, alpha: float, temperature: float):
    """alpha * CE(gold) + (1 - alpha) * T^2 * KL(teacher_T || student_T); rows labelled -100 have no gold label."""
    import torch.nn.functional as F

    labelled = labels != -100
    ce = F.cross_entropy(student_logits[labelled], labels[labelled]) if labelled.any() else student_logits.sum() * 0
    if teacher is None:
        return ce
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    )
    return alpha * ce + (1 - alpha) * t * t * kl


def exits_kd_loss(final_logits, exit_logits, labels, teacher, alpha: float, temperature: float, follow: float = 0.5):
    """The final layer's kd_loss plus, per exit, (1 - follow) * kd_loss (gold + teacher) + follow * T^2 *
    KL(final_T || exit_T), the final layer's logits detached: exits learn from the teacher and from the model they
    stand in for."""
    import torch.nn.functional as F

    loss = kd_loss(final_logits, labels, teacher, alpha, temperature)
    t = temperature
    target = F.log_softmax(final_logits.detach() / t, dim=-1)
    for logits in exit_logits:
        kl = F.kl_div(F.log_softmax(logits / t, dim=-1), target, log_target=True, reduction="batchmean")
        own = kd_loss(logits, labels, teacher, alpha, temperature) if follow < 1 else 0.0
        loss = loss + (1 - follow) * own + follow * t * t * kl
    return loss


def cascade_threshold(student_probs: np.ndarray, teacher_pred: np.ndarray, target: float) -> dict:
    """The smallest student margin below which deferring to the teacher makes the cascade agree with it on >= target."""
    from finsent.core.metrics import margins

    margin = margins(student_probs)
    student_pred = student_probs.argmax(1)
    n = len(margin)
    best = {"margin_threshold": 1.0 + 1e-9, "val_agreement": 1.0, "val_deferred": 1.0}
    for threshold in np.unique(np.concatenate([[0.0], margin + 1e-9])):
        defer = margin < threshold
        agree = float(np.mean(np.where(defer, True, student_pred == teacher_pred))) if n else 1.0
        if agree >= target:
            return {"margin_threshold": float(threshold), "val_agreement": agree, "val_deferred": float(defer.mean())}
    return best


def trainer_class(alpha: float, temperature: float, exit_follow: float = 0.5):
    """A transformers Trainer whose loss is `kd_loss` (validation batches carry no teacher logits: plain CE)."""
    from transformers import Trainer

    class DistillTrainer(Trainer):
        loss_is_scaled_for_ga = False  # kd_loss is a per-batch mean

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            teacher = inputs.pop("teacher_logits", None)
            if teacher is None and model.training:  # every training batch carries them; validation batches do not
                raise RuntimeError("a distillation training batch without the teacher's logits")
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            soft = None if teacher is None else teacher.float()
            if isinstance(outputs, dict) and "exit_logits" in outputs:  # a MultiExitModel (--exit_layers)
                exits = [e.float() for e in outputs["exit_logits"]]
                loss = exits_kd_loss(outputs["logits"].float(), exits, labels, soft, alpha, temperature, exit_follow)
                outputs = {"logits": outputs["logits"]}  # what evaluation scores: the final layer
            else:
                loss = kd_loss(outputs.logits.float(), labels, soft, alpha, temperature)
            return (loss, outputs) if return_outputs else loss

    return DistillTrainer


class DistillationRecipe(Recipe):
    """A student that learns from a teacher run's soft labels on the gold train split plus unlabeled sentences; after
    training it chooses the cascade threshold, and each exit's threshold where it has exits (--exit_layers)."""

    def __init__(self, config: DistillConfig):
        self.config = config
        self._held: list[str] = []
        self._record: dict = {}

    def plan(self, splits: Splits, cfg, log) -> tuple[LabelledData, np.ndarray]:
        """The student's training sentences (gold train split + unlabeled ones) with the teacher's logits for each."""
        d = self.config
        teacher_dir = Path(d.teacher)
        teacher_results = folder.read_results(teacher_dir)
        folder.require_task(teacher_dir, cfg.task, f"--teacher of a --task {cfg.task} student")
        check_teacher_split(teacher_dir, splits)
        if splits.train.entities is None:
            unlabeled, self._held, counts = unlabeled_sentences(splits, d, cfg.data_path, cfg.seed)
            train = LabelledData(splits.train.texts + unlabeled, splits.train.labels + [-100] * len(unlabeled))
        else:  # the unlabeled pools are sentences without entities: an entity student learns from its train split
            unlabeled, self._held, counts, train = [], [], {"used": 0, "threshold": 0}, splits.train
        log(
            f"distilling from {teacher_dir} ({teacher_results.get('model_name')}, test accuracy "
            f"{teacher_results.get('accuracy', float('nan')):.4f}): {len(splits.train)} labelled + {len(unlabeled)} "
            f"unlabeled sentences, alpha {d.alpha}, T {d.distill_temperature}"
        )
        start = time.perf_counter()
        soft = teacher_logits(teacher_dir, run_inputs(teacher_dir, train))
        log(
            f"teacher logits for {len(train)} sentences in {time.perf_counter() - start:.0f}s (cached in {teacher_dir})"
        )
        teacher = {k: teacher_results.get(k) for k in ("version", "model_name", "use_lora", "accuracy", "macro_f1")}
        self._record = {
            "distillation": {**dataclasses.asdict(d), "n_labelled": len(splits.train), "unlabeled_counts": counts},
            "teacher": {"run": str(teacher_dir), **teacher},
        }
        return train, soft

    def wrap_model(self, model):
        if not self.config.exit_layers:
            return model
        from finsent.models import exits

        config = model.config
        exits.check_layers(self.config.exit_layers, int(config.num_hidden_layers), config.model_type)
        heads = exits.ExitHeads(self.config.exit_layers, int(config.hidden_size), len(LABELS))
        return exits.MultiExitModel(model, heads)

    def trainer_class(self):
        return trainer_class(self.config.alpha, self.config.distill_temperature, self.config.exit_follow)

    @property
    def keeps_extra_columns(self) -> bool:
        return True

    @property
    def held_out(self) -> list[str]:
        return self._held

    def record(self) -> dict:
        return self._record

    def after_write(self, out: Path, splits: Splits, val_logits: np.ndarray, temperature: float, model, log) -> None:
        store_cascade(out, self.config, splits, val_logits, temperature, self._held, log)
        if self.config.exit_layers:
            num_layers = int(model.config.num_hidden_layers)
            store_exits(out, self.config, run_inputs(out, splits.val) + self._held, num_layers, log)


def store_cascade(
    out: Path, distill: DistillConfig, splits: Splits, val_logits, temperature: float, held: list[str], log
) -> None:
    """Choose the cascade's margin threshold on validation (and the held-out unlabeled sentences) and keep it in the
    student's finsent_model.json."""
    from finsent.inference.predictor import Predictor

    probs = softmax(val_logits, temperature)
    if held:  # the trained student, as it will serve (its temperature included)
        probs = np.concatenate([probs, Predictor(out).score(held).probs])
    teacher_pred = teacher_logits(distill.teacher, run_inputs(distill.teacher, splits.val) + held).argmax(1)
    choice = cascade_threshold(probs, teacher_pred, distill.cascade_agreement)
    choice["threshold_sentences"] = len(probs)
    info = folder.read_model_info(out)
    folder.write_model_info(
        out, dataclasses.replace(info, extra={**info.extra, "cascade": {"teacher": distill.teacher, **choice}})
    )
    log(
        f"cascade: margin < {choice['margin_threshold']:.3f} defers {choice['val_deferred']:.1%} of "
        f"{len(probs)} validation{' and held-out' if held else ''} sentences to the teacher and agrees with it on "
        f"{choice['val_agreement']:.1%}"
    )


def store_exits(out: Path, distill: DistillConfig, texts: list[str], num_layers: int, log) -> None:
    """Choose each exit's margin threshold on validation (and the held-out unlabeled sentences) against the final
    layer, and keep them in the run's finsent_model.json."""
    from finsent.inference import early_exit

    *exit_logits, final = early_exit.exit_logits(out, texts)
    probs = [softmax(e) for e in exit_logits]
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
    info = folder.read_model_info(out)
    folder.write_model_info(out, dataclasses.replace(info, extra={**info.extra, "exits": spec}))
    said = ", ".join(f"layer {k} margin >= {t:.3f}: {s:.1%}" for k, t, s in zip(spec["layers"], thresholds, shares))
    log(
        f"early exits on {len(texts)} validation and held-out sentences: {said} answered early; "
        f"agreement with the final layer {spec['val_agreement']:.2%}"
    )
