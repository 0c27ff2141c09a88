"""Inference on a trained run folder: tokenize, sort by length, batch, softmax with the run's temperature."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finsent.data import LABELS
from finsent.errors import FinsentError
from finsent.metrics import softmax

BACKENDS = ("torch", "onnx")
ONNX_DIR = "onnx"
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
EXPORT_INFO = "export.json"
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors")
PICKLE_FILES = ("adapter_model.bin", "pytorch_model.bin")
METRIC_KEYS = ("accuracy", "macro_f1", "ece", "avg_confidence", "per_class", "n_train", "n_val", "n_test", "created_at")


@dataclass(frozen=True)
class ModelInfo:
    """What a run folder says about itself: version, labels, max length, temperature and test metrics."""

    version: str
    labels: tuple[str, ...]
    max_length: int
    temperature: float = 1.0
    model_name: str | None = None
    use_lora: bool | None = None
    metrics: dict = field(default_factory=dict)


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise FinsentError(f"{path}: cannot read ({e}); is the run folder complete?") from None
    except json.JSONDecodeError as e:
        raise FinsentError(f"{path}:{e.lineno}: invalid JSON ({e.msg}); re-run training or export") from None
    if not isinstance(obj, dict):
        raise FinsentError(f"{path}: expected a JSON object")
    return obj


def _temperature(value) -> float:
    """The fitted temperature, or 1.0 where there is none or it is not a positive finite number."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        return 1.0
    return t if math.isfinite(t) and t > 0 else 1.0


def read_model_info(model_dir: str | Path) -> ModelInfo:
    """Read finsent_model.json, label_map.json and results.json (all optional but the folder itself)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FinsentError(f"{model_dir}: no such run folder; pass --model_dir pointing at a training --output_dir")
    meta = _read_json(model_dir / "finsent_model.json") if (model_dir / "finsent_model.json").is_file() else {}
    results = _read_json(model_dir / "results.json") if (model_dir / "results.json").is_file() else {}
    labels = meta.get("labels")
    if not labels and (model_dir / "label_map.json").is_file():
        id2label = _read_json(model_dir / "label_map.json").get("id2label", {})
        labels = [id2label[k] for k in sorted(id2label, key=int)] if id2label else None
    return ModelInfo(
        version=str(meta.get("version") or results.get("version") or model_dir.name),
        labels=tuple(labels or LABELS),
        max_length=int(meta.get("max_length") or 128),
        temperature=_temperature(results.get("temperature", 1.0)),
        model_name=meta.get("model_name"),
        use_lora=meta.get("use_lora"),
        metrics={k: results[k] for k in METRIC_KEYS if k in results},
    )


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
    info_path = onnx_path.parent / EXPORT_INFO
    if onnx_path.parent == model_dir or not info_path.is_file():
        return
    expected = _read_json(info_path).get("source_weights_sha256")
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
        self.model, self.tokenizer = load_trained(model_dir)
        self.device = torch.device(device)
        self.model.to(self.device)
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

    def records(self) -> list[dict]:
        """One dict per input: label, confidence, probabilities by label, truncated."""
        pred = self.probs.argmax(axis=1) if len(self.probs) else np.zeros(0, dtype=int)
        return [
            {
                "label": self.labels[pred[i]],
                "confidence": round(float(self.probs[i, pred[i]]), 6),
                "probabilities": {name: round(float(self.probs[i, j]), 6) for j, name in enumerate(self.labels)},
                "truncated": bool(self.truncated[i]),
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
            info_path = self.backend.path.parent / EXPORT_INFO
            meta["onnx"] = {
                "file": self.backend.path.name,
                **(_read_json(info_path).get("quantization", {}) if info_path.is_file() else {}),
            }
        return meta
