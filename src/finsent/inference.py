"""Inference on a trained run folder: tokenize, sort by length, batch, softmax with the run's temperature."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import queue
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finsent.data import LABELS
from finsent.errors import FinsentError
from finsent.metrics import softmax

BACKENDS = ("torch", "onnx")
DEVICES = ("cpu", "cuda")
BATCH_SIZE = {"cpu": 32, "cuda": 512}
# Texts per tokenizer call: calls after the first run ahead on a thread pool (the fast tokenizer releases the GIL while
# it encodes) and overlap the model; each chunk is sorted by length and batched on its own.
TOKENIZE_CHUNK = 4096
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


def torch_device(device: str):
    """(torch.device, dtype) for --device: fp32 on the CPU; on a CUDA GPU bf16 where it is supported, else fp16."""
    import torch

    if device not in DEVICES:
        raise FinsentError(f"--device {device!r}: expected one of {', '.join(DEVICES)}")
    if device == "cpu":
        return torch.device("cpu"), torch.float32
    if not torch.cuda.is_available():
        raise FinsentError(
            "--device cuda: PyTorch sees no CUDA GPU here (torch.cuda.is_available() is False); use --device cpu"
        )
    return torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class TorchBackend:
    """The merged PyTorch model (safetensors only), fp32 on the CPU or bf16/fp16 on a CUDA GPU."""

    name = "torch"

    def __init__(self, model_dir: Path, num_threads: int | None = None, device: str = "cpu"):
        import torch

        from finsent.modeling import load_trained

        self.device, self.dtype = torch_device(device)
        if num_threads:
            torch.set_num_threads(num_threads)
        if not any((model_dir / n).is_file() for n in WEIGHT_FILES):
            pickles = [n for n in PICKLE_FILES if (model_dir / n).is_file()]
            hint = f" (found {pickles[0]}: pickle weights are not loaded)" if pickles else ""
            raise FinsentError(
                f"{model_dir}: no adapter_model.safetensors or model.safetensors{hint}; pass a finsent run folder, or --backend onnx for an exported one"
            )
        self._torch = torch
        model, self.tokenizer = load_trained(model_dir)
        self.model = model.to(self.device, self.dtype)
        self.num_labels = int(self.model.config.num_labels)

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            if self.device.type == "cuda":  # pinned host memory: the copy to the GPU runs asynchronously
                inputs = {
                    k: torch.from_numpy(v).pin_memory().to(self.device, non_blocking=True) for k, v in feeds.items()
                }
            else:
                inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
            out = self.model(**inputs)
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
        backend: str | Callable[[dict], np.ndarray] = "torch",
        batch_size: int | None = None,
        num_threads: int | None = None,
        onnx_file: str = ONNX_INT8,
        spinning: bool = False,
        device: str = "cpu",
    ):
        if isinstance(backend, str) and backend not in BACKENDS:
            raise FinsentError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        if device not in DEVICES:
            raise FinsentError(f"--device {device!r}: expected one of {', '.join(DEVICES)}")
        if device != "cpu" and backend != "torch":
            raise FinsentError(f"--device {device}: only the torch backend runs on a GPU; use --backend torch")
        batch_size = BATCH_SIZE[device] if batch_size is None else batch_size
        if batch_size < 1:
            raise FinsentError(f"--batch_size {batch_size}: must be at least 1")
        self.model_dir = Path(model_dir)
        self.info = read_model_info(self.model_dir)
        if not isinstance(backend, str):  # an engine object (benchmarks): .name, .tokenizer, .input_names, .num_labels
            self.backend = backend
            input_names = backend.input_names
        elif backend == "onnx":
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
        self.tokenizer_threads = max(1, min(8, (os.cpu_count() or 2) - 1))
        self._tokenizers: queue.SimpleQueue = queue.SimpleQueue()  # the copies not in use right now
        self._tokenizer_copies: list = []

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def labels(self) -> tuple[str, ...]:
        return self.info.labels

    @staticmethod
    def _check_unicode(texts: Sequence[str]) -> None:
        for i, text in enumerate(texts):
            if not is_valid_unicode(text):
                raise FinsentError(
                    f"text {i + 1} of {len(texts)} ({text[:40]!r}) is not valid Unicode (a lone surrogate); fix its encoding"
                )

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids per text (truncated to max_length) and a flag for each text that was cut."""
        self._check_unicode(texts)
        return self._tokenize(texts)

    def _tokenize(self, texts: Sequence[str], tokenizer=None) -> tuple[list[list[int]], np.ndarray]:
        tokenizer = tokenizer or self.tokenizer
        max_length = self.info.max_length
        ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        truncated = np.zeros(len(texts), dtype=bool)
        at_limit = [i for i, x in enumerate(ids) if len(x) >= max_length]
        if at_limit:  # only texts that reached the limit can have been cut: count their full length
            full = tokenizer([texts[i] for i in at_limit], truncation=False, verbose=False)["input_ids"]
            truncated[at_limit] = [len(x) > max_length for x in full]
        return ids, truncated

    def _feeds(self, batch: list[list[int]]) -> dict[str, np.ndarray]:
        lengths = np.fromiter(map(len, batch), dtype=np.int64, count=len(batch))
        mask = np.arange(lengths.max()) < lengths[:, None]
        input_ids = np.full(mask.shape, self.pad_id, dtype=np.int64)
        input_ids[mask] = np.fromiter(itertools.chain.from_iterable(batch), dtype=np.int64, count=int(lengths.sum()))
        feeds = {
            "input_ids": input_ids,
            "attention_mask": mask.astype(np.int64),
            "token_type_ids": np.zeros_like(input_ids),
        }
        return {k: feeds[k] for k in self.input_names}

    def encode_chunks(self, texts: Sequence[str]) -> Iterator[tuple[int, list[list[int]], np.ndarray]]:
        """(start, token ids, truncated) per TOKENIZE_CHUNK texts, later chunks tokenized ahead on a thread pool."""
        starts = range(0, len(texts), TOKENIZE_CHUNK)
        if len(starts) <= 1:
            yield 0, *self._tokenize(texts)
            return
        if not self._tokenizer_copies:  # one copy per thread: a tokenizer call changes its truncation settings
            self._tokenizer_copies = [copy.deepcopy(self.tokenizer) for _ in range(self.tokenizer_threads)]
            for tokenizer in self._tokenizer_copies:
                self._tokenizers.put(tokenizer)

        def tokenize(start: int) -> tuple[list[list[int]], np.ndarray]:
            tokenizer = self._tokenizers.get()
            try:
                return self._tokenize(texts[start : start + TOKENIZE_CHUNK], tokenizer)
            finally:
                self._tokenizers.put(tokenizer)

        with ThreadPoolExecutor(self.tokenizer_threads, thread_name_prefix="finsent-tokenize") as pool:
            for start, (ids, truncated) in zip(starts, pool.map(tokenize, starts)):
                yield start, ids, truncated

    def logits(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits in input order and the truncation flags."""
        self._check_unicode(texts)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        truncated = np.zeros(len(texts), dtype=bool)
        for start, ids, trunc in self.encode_chunks(texts):
            truncated[start : start + len(ids)] = trunc
            order = np.argsort(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)), kind="stable")
            for first in range(0, len(order), self.batch_size):
                idx = order[first : first + self.batch_size]
                out[start + idx] = self.backend(self._feeds([ids[i] for i in idx]))
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
            "device": str(getattr(self.backend, "device", "cpu")),
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
