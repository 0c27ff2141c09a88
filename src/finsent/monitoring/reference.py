"""A run's own reference for monitoring: its test split's calibrated predictions (the distributions a window is
compared with), its validation logits (the ATC threshold) and, for novelty, its training sentences embedded by the
run's own encoder with a distance threshold chosen on validation.

The embeddings are cached in the run folder (monitor_reference.npz, keyed by the weights' digest); where the run's
training data cannot be read any more (a run copied to another machine), novelty is off and the report says why."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finsent.core.errors import FinsentError
from finsent.core.metrics import softmax
from finsent.core.text import sentence_hash
from finsent.monitoring import stats
from finsent.monitoring.config import MonitorThresholds
from finsent.runs.folder import (
    load_run,
    read_model_info,
    read_monitor_reference,
    read_sentences,
    weights_digest,
    write_monitor_reference,
)
from finsent.training.calibration import logits_from_probs

EMBED_BATCH = 64


@dataclass
class Reference:
    """What a window is compared with."""

    version: str
    labels: tuple[str, ...]
    temperature: float
    results: dict
    test_probs: np.ndarray  # calibrated, like served predictions
    test_truth: np.ndarray
    test_texts: list[str]
    atc_threshold: float
    atc_source: str = "validation"
    val_estimate: dict = field(default_factory=dict)
    encoder: Encoder | None = None
    train_embeddings: np.ndarray | None = None
    novelty_threshold: float | None = None
    novelty_val: tuple[int, int] | None = None  # validation's novel count and size at the threshold
    novelty_note: str = ""

    @property
    def test_lengths(self) -> np.ndarray:
        return np.array([len(t) for t in self.test_texts], dtype=np.float64)

    def summary(self) -> dict:
        """report.json's `reference`."""
        est_acc, est_f1 = stats.expected_performance(self.test_probs)
        return {
            "model_version": self.version,
            "n_test": len(self.test_probs),
            "test_accuracy": self.results.get("accuracy"),
            "test_macro_f1": self.results.get("macro_f1"),
            "estimated_test_accuracy": est_acc,
            "estimated_test_macro_f1": est_f1,
            "temperature": self.temperature,
            "ece_calibrated": self.results.get("ece_calibrated"),
            "label_shares": dict(
                zip(
                    self.labels,
                    np.bincount(self.test_probs.argmax(1), minlength=len(self.labels)) / len(self.test_probs),
                )
            ),
            "atc_threshold": self.atc_threshold,
            "atc_threshold_source": self.atc_source,
            **self.val_estimate,
            "novelty_threshold": self.novelty_threshold,
            "novelty_share_val": None if self.novelty_val is None else self.novelty_val[0] / self.novelty_val[1],
            "novelty_reference_sentences": None if self.train_embeddings is None else len(self.train_embeddings),
            "novelty_note": self.novelty_note,
        }


class Encoder:
    """The run's own encoder: mean-pooled last hidden states, L2-normalised."""

    def __init__(self, model_dir: Path, max_length: int):
        import torch

        from finsent.models.loading import load_trained

        self._torch = torch
        self.model, self.tokenizer = load_trained(model_dir)
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(order), EMBED_BATCH):
                idx = order[start : start + EMBED_BATCH]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**batch, output_hidden_states=True).hidden_states[-1]
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().numpy()
        return out


def nearest_distance(embeddings: np.ndarray, reference: np.ndarray, block: int = 2048) -> np.ndarray:
    """Cosine distance of each embedding to its nearest reference embedding (both L2-normalised)."""
    out = np.empty(len(embeddings), dtype=np.float32)
    for start in range(0, len(embeddings), block):
        sims = embeddings[start : start + block] @ reference.T
        out[start : start + block] = 1.0 - sims.max(axis=1)
    return out


def _split_texts(run_dir: Path, results: dict) -> tuple[list[str], list[str]]:
    """The run's training and validation sentences, read again from its recorded data and matched by hash.

    The data's resolved path (results.json `data.path`, absolute) first, then the path as given to train (which may be
    relative to where training ran)."""
    from finsent.data.corpus import load_data

    record = read_sentences(run_dir)
    config, data_record = results.get("config") or {}, results.get("data") or {}
    candidates = [p for p in (data_record.get("path"), config.get("data_path")) if p]
    if record is None or not candidates:
        raise FinsentError("the run records no split (sentences.json) or data path")
    columns = (config.get("text_column", "text"), config.get("label_column", "label"))
    for i, path in enumerate(candidates):
        try:
            data = load_data(path, config.get("agreement", "all"), *columns)
            break
        except FinsentError:
            if i == len(candidates) - 1:
                raise
    by_hash = {sentence_hash(t): t for t in data.texts}
    train = [by_hash[h] for h in record.get("train", []) if h in by_hash]
    val = [by_hash[h] for h in record.get("val", []) if h in by_hash]
    if not train or not val:
        raise FinsentError("none of the run's training or validation sentences are in its recorded data")
    return train, val


def _novelty(ref: Reference, run_dir: Path, thresholds: MonitorThresholds) -> None:
    """Embed the training sentences (a seeded sample) and set the threshold at validation's novelty_quantile."""
    digest = weights_digest(run_dir)  # None (no safetensors weights): nothing to key a cache on, so none
    cached = read_monitor_reference(run_dir, digest) if digest else None
    wanted = thresholds.reference_sentences
    settings = {"sample": wanted, "quantile": thresholds.novelty_quantile, "seed": thresholds.seed}
    if cached is None or any(k not in cached or float(cached[k]) != float(v) for k, v in settings.items()):
        train, val = _split_texts(run_dir, ref.results)
        if len(train) > wanted:
            rng = np.random.default_rng(thresholds.seed)
            train = [train[i] for i in sorted(rng.choice(len(train), wanted, replace=False))]
        train_emb = ref.encoder(train)
        val_dist = nearest_distance(ref.encoder(val), train_emb)
        threshold = np.quantile(val_dist, thresholds.novelty_quantile)
        cached = {
            "train_embeddings": train_emb,
            "threshold": np.float64(threshold),
            "val_n": np.int64(len(val_dist)),
            "val_novel": np.int64((val_dist > threshold).sum()),
            **{k: np.float64(v) for k, v in settings.items()},
        }
        if digest:
            write_monitor_reference(run_dir, cached, digest)
    ref.train_embeddings = cached["train_embeddings"]
    ref.novelty_threshold = float(cached["threshold"])
    ref.novelty_val = (int(cached["val_novel"]), int(cached["val_n"]))


def build_reference(run_dir: str | Path, thresholds: MonitorThresholds, novelty_off: str | None = None) -> Reference:
    """The reference of a finished run folder; novelty where its encoder and training data can be read, unless
    novelty_off says why not."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    info = read_model_info(run_dir)
    temperature = info.temperature  # what the Predictor serves with
    test_probs = softmax(logits_from_probs(run.probs), temperature)
    ref = Reference(
        version=run.version,
        labels=tuple(info.labels),
        temperature=temperature,
        results=run.results,
        test_probs=test_probs,
        test_truth=run.y_true,
        test_texts=run.log["text"].astype(str).tolist(),
        atc_threshold=stats.atc_threshold(test_probs.max(1), test_probs.argmax(1) == run.y_true),
        atc_source="test (the run kept no val_logits.npz)",
    )
    if run.val_logits is not None:  # ATC's threshold on validation where the run kept its logits
        val_probs = softmax(run.val_logits["logits"], temperature)
        val_truth = np.asarray(run.val_logits["labels"])
        ref.atc_threshold = stats.atc_threshold(val_probs.max(1), val_probs.argmax(1) == val_truth)
        ref.atc_source = "validation"
        ref.val_estimate = {
            "val_accuracy": float(np.mean(val_probs.argmax(1) == val_truth)),
            "estimated_val_accuracy": stats.expected_performance(val_probs)[0],
        }
    if novelty_off:
        ref.novelty_note = f"novelty off: {novelty_off}"
        return ref
    try:
        ref.encoder = Encoder(run_dir, info.max_length)
        _novelty(ref, run_dir, thresholds)
    except Exception as e:  # noqa: BLE001 - novelty is optional: any failure to load or embed turns it off, said
        ref.encoder, ref.train_embeddings, ref.novelty_threshold = None, None, None
        ref.novelty_note = f"novelty off: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return ref
