"""Inference on a trained run folder: tokenize, sort by length, batch, softmax with the run's temperature."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finsent.errors import FinsentError
from finsent.metrics import softmax
from finsent.runs import ONNX_DIR, ONNX_INT8, read_export_info, read_model_info

BACKENDS = ("torch", "onnx")
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors")
PICKLE_FILES = ("adapter_model.bin", "pytorch_model.bin")


def weights_digest(model_dir: Path) -> str | None:
    """sha256 of the run's safetensors weights (adapter or full model), to tell a stale ONNX export."""
    for name in WEIGHT_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            return h.hexdigest()
    return None


def is_valid_unicode(text: str) -> bool:
    """False for strings the tokenizer cannot take, e.g. lone surrogates from JSON escapes or undecodable argv bytes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def find_onnx(model_dir: str | Path, filename: str = ONNX_INT8) -> Path:
    """The ONNX file of a run folder (`<run>/onnx/<file>`) or of an exported folder itself."""
    model_dir = Path(model_dir)
    for path in (model_dir / ONNX_DIR / filename, model_dir / filename):
        if path.is_file():
            return path
    raise FinsentError(
        f"{model_dir}: no ONNX model ({ONNX_DIR}/{filename}); run `finsent export-onnx --model_dir {model_dir}` first, or use --backend torch"
    )


def check_onnx_fresh(model_dir: Path, onnx_path: Path) -> None:
    """Refuse an ONNX export made from other weights than the run folder holds now."""
    if onnx_path.parent == model_dir:
        return
    expected = read_export_info(onnx_path.parent).get("source_weights_sha256")
    actual = weights_digest(model_dir)
    if expected and actual and expected != actual:
        raise FinsentError(
            f"{onnx_path}: exported from other weights than {model_dir} holds now; re-run `finsent export-onnx --model_dir {model_dir}`"
        )


class TorchBackend:
    """The merged PyTorch model (safetensors only)."""

    name = "torch"

    def __init__(self, model_dir: Path, num_threads: int | None = None, device: str = "cpu"):
        import torch

        from finsent.modeling import load_trained

        if num_threads:
            torch.set_num_threads(num_threads)
        if not any((model_dir / n).is_file() for n in WEIGHT_FILES):
            pickles = [n for n in PICKLE_FILES if (model_dir / n).is_file()]
            hint = f" (found {pickles[0]}: pickle weights are not loaded)" if pickles else ""
            raise FinsentError(
                f"{model_dir}: no adapter_model.safetensors or model.safetensors{hint}; pass a finsent run folder, or --backend onnx for an exported one"
            )
        self._torch = torch
        self.device = device
        self.model, self.tokenizer = load_trained(model_dir)
        self.model.to(device)
        self.num_labels = int(self.model.config.num_labels)

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(**{k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()})
        return out.logits.float().cpu().numpy()


class OnnxBackend:
    """An exported ONNX model (int8 by default) on onnxruntime's CPU provider."""

    name = "onnx"

    def __init__(self, onnx_path: Path, num_threads: int | None = None, spinning: bool = False):
        import onnxruntime as ort

        from finsent.modeling import load_tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or 0
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise FinsentError(
                f"{onnx_path}: cannot load the ONNX model ({str(e).splitlines()[0]}); re-run finsent export-onnx"
            ) from None
        self.path = onnx_path
        self.tokenizer = load_tokenizer(str(onnx_path.parent))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.num_labels = int(self.session.get_outputs()[0].shape[-1])

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {k: feeds[k] for k in self.input_names})[0]


@dataclass
class Scores:
    """Calibrated probabilities (rows in input order) and which inputs were truncated."""

    probs: np.ndarray
    truncated: np.ndarray
    labels: tuple[str, ...]
    answered_by: list[str] | None = None  # a cascade's: which model's probabilities each row holds

    def records(self) -> list[dict]:
        """One dict per input: label, confidence, probabilities by label, truncated."""
        pred = self.probs.argmax(axis=1) if len(self.probs) else np.zeros(0, dtype=int)
        return [
            {
                "label": self.labels[pred[i]],
                "confidence": round(float(self.probs[i, pred[i]]), 6),
                "probabilities": {name: round(float(self.probs[i, j]), 6) for j, name in enumerate(self.labels)},
                "truncated": bool(self.truncated[i]),
                **({} if self.answered_by is None else {"answered_by": self.answered_by[i]}),
            }
            for i in range(len(self.probs))
        ]


class Predictor:
    """Score sentences with a run folder on the torch or onnx backend; batches are sorted by token length."""

    def __init__(
        self,
        model_dir: str | Path,
        backend: str = "torch",
        batch_size: int = 32,
        num_threads: int | None = None,
        onnx_file: str = ONNX_INT8,
        spinning: bool = False,
        device: str = "cpu",
    ):
        if backend not in BACKENDS:
            raise FinsentError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        if batch_size < 1:
            raise FinsentError(f"--batch_size {batch_size}: must be at least 1")
        self.model_dir = Path(model_dir)
        self.info = read_model_info(self.model_dir)
        if backend == "onnx":
            path = find_onnx(self.model_dir, onnx_file)
            check_onnx_fresh(self.model_dir, path)
            self.backend: Callable[[dict], np.ndarray] = OnnxBackend(path, num_threads, spinning)
            input_names = self.backend.input_names
        else:
            self.backend = TorchBackend(self.model_dir, num_threads, device)
            input_names = list(self.backend.tokenizer.model_input_names)
        if self.backend.num_labels != len(self.info.labels):
            raise FinsentError(
                f"{self.model_dir}: the model has {self.backend.num_labels} outputs but the run lists {len(self.info.labels)} labels"
            )
        self.tokenizer = self.backend.tokenizer
        self.input_names = [n for n in input_names if n in ("input_ids", "attention_mask", "token_type_ids")]
        self.batch_size = batch_size
        self.pad_id = self.tokenizer.pad_token_id or 0

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def labels(self) -> tuple[str, ...]:
        return self.info.labels

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids per text (truncated to max_length) and a flag for each text that was cut."""
        for i, text in enumerate(texts):
            if not is_valid_unicode(text):
                raise FinsentError(
                    f"text {i + 1} of {len(texts)} ({text[:40]!r}) is not valid Unicode (a lone surrogate); fix its encoding"
                )
        max_length = self.info.max_length
        ids = self.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        truncated = np.zeros(len(texts), dtype=bool)
        at_limit = [i for i, x in enumerate(ids) if len(x) >= max_length]
        if at_limit:  # only texts that reached the limit can have been cut: count their full length
            full = self.tokenizer([texts[i] for i in at_limit], truncation=False, verbose=False)["input_ids"]
            truncated[at_limit] = [len(x) > max_length for x in full]
        return ids, truncated

    def _feeds(self, batch: list[list[int]]) -> dict[str, np.ndarray]:
        width = max(len(x) for x in batch)
        input_ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, x in enumerate(batch):
            input_ids[row, : len(x)] = x
            mask[row, : len(x)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        return {k: feeds[k] for k in self.input_names}

    def logits(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits in input order and the truncation flags."""
        ids, truncated = self.encode(texts)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self.backend(self._feeds([ids[i] for i in idx]))
        return out, truncated

    def score(self, texts: Sequence[str]) -> Scores:
        """Probabilities calibrated with the run's temperature (1.0 where it has none)."""
        logits, truncated = self.logits(texts)
        return Scores(softmax(logits, self.info.temperature), truncated, self.labels)

    def predict(self, texts: Sequence[str]) -> list[dict]:
        """label, confidence, probabilities and truncated for each text, in input order."""
        return self.score(texts).records()

    def metadata(self) -> dict:
        """What /metadata reports: version, labels, backend, max length, temperature and the run's metrics."""
        meta = {
            "version": self.info.version,
            "labels": list(self.labels),
            "backend": self.backend_name,
            "model_name": self.info.model_name,
            "use_lora": self.info.use_lora,
            "max_length": self.info.max_length,
            "temperature": self.info.temperature,
            "metrics": self.info.metrics,
        }
        if self.backend_name == "onnx":
            meta["onnx"] = {
                "file": self.backend.path.name,
                **(read_export_info(self.backend.path.parent).get("quantization") or {}),
            }
        return meta


def margins(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row."""
    top = np.sort(probs, axis=1)
    return top[:, -1] - top[:, -2]


class CascadePredictor:
    """A fast student scores every sentence; a teacher re-scores those whose calibrated margin is below a threshold."""

    extra_fields = ("answered_by",)

    def __init__(self, student: Predictor, teacher: Predictor, threshold: float | None = None):
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
        self.info = student.info
        self.model_dir = student.model_dir
        self.deferred = self.scored = 0

    @property
    def labels(self) -> tuple[str, ...]:
        return self.student.labels

    @property
    def backend_name(self) -> str:
        return f"cascade({self.student.backend_name}+{self.teacher.backend_name})"

    def score(self, texts: Sequence[str]) -> Scores:
        scores = self.student.score(texts)
        defer = np.flatnonzero(margins(scores.probs) < self.threshold) if len(texts) else np.zeros(0, dtype=int)
        answered = [self.student.info.version] * len(texts)
        if len(defer):
            again = self.teacher.score([texts[i] for i in defer])
            scores.probs[defer] = again.probs
            scores.truncated[defer] = again.truncated
            for i in defer:
                answered[i] = self.teacher.info.version
        self.scored += len(texts)
        self.deferred += len(defer)
        return Scores(scores.probs, scores.truncated, self.labels, answered)

    def predict(self, texts: Sequence[str]) -> list[dict]:
        return self.score(texts).records()

    def metadata(self) -> dict:
        return {
            **self.student.metadata(),
            "backend": self.backend_name,
            "cascade": {
                "teacher": self.teacher.metadata(),
                "margin_threshold": self.threshold,
                "deferred_share": self.deferred / self.scored if self.scored else None,
            },
        }
