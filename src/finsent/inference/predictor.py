"""Inference on a trained run folder: tokenize, sort by length, batch, softmax with the run's temperature."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finsent.core.errors import FinsentError
from finsent.core.logs import warn
from finsent.core.metrics import softmax
from finsent.core.text import is_valid_unicode
from finsent.inference.backends import (
    BACKENDS,
    DEVICES,
    ONNX_RUNTIMES,
    OnnxBackend,
    TorchBackend,
    check_onnx_fresh,
    find_onnx,
)
from finsent.runs.folder import ONNX_INT8, read_export_info, read_model_info

BATCH_SIZE = {"cpu": 32, "cuda": 512}
# Texts per tokenizer call: calls after the first run ahead on a thread pool (the fast tokenizer releases the GIL while
# it encodes) and overlap the model; each chunk is sorted by length and batched on its own.
TOKENIZE_CHUNK = 4096


def truncating_encoder(tokenizer, max_length: int):
    """A private copy of the run's Rust tokenizer that truncates at max_length and never pads. Nothing changes it
    afterwards, so threads share it (a transformers tokenizer call re-sets truncation on every call), and each
    encoding says whether it was cut (its overflowing part), so no second pass counts full lengths."""
    rust = tokenizer.backend_tokenizer
    encoder = type(rust).from_str(rust.to_str())
    encoder.enable_truncation(max_length)
    encoder.no_padding()
    return encoder


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
        backend: str | Callable[[dict], np.ndarray] = "torch",
        batch_size: int | None = None,
        num_threads: int | None = None,
        onnx_file: str = ONNX_INT8,
        onnx_runtime: str = ONNX_RUNTIMES[0],
        device: str = "cpu",
        early_exit: bool = False,
        precision: str = "fp32",
        streams: int = 1,
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
        if streams < 1 or (streams > 1 and (backend != "onnx" or early_exit)):
            raise FinsentError(
                f"--streams {streams}: concurrent forward passes run on an ONNX engine without --early_exit; use 1 otherwise"
                if streams >= 1
                else f"--streams {streams}: must be at least 1"
            )
        self.model_dir = Path(model_dir)
        self.info = read_model_info(self.model_dir)
        if not isinstance(backend, str):  # an engine object (benchmarks): .name, .tokenizer, .input_names, .num_labels
            self.backend = backend
            input_names = backend.input_names
        elif early_exit:
            if device != "cpu":
                raise FinsentError(f"--early_exit runs on the CPU; leave out --device {device}")
            from finsent.inference.early_exit import exit_backend

            self.backend = exit_backend(self.model_dir, backend, num_threads, onnx_file, onnx_runtime, precision)
            input_names = self.backend.input_names
        elif backend == "onnx":
            path = find_onnx(self.model_dir, onnx_file)
            check_onnx_fresh(self.model_dir, path)
            method = (read_export_info(path.parent).get("quantization") or {}).get("method", "")
            if path.name == ONNX_INT8 and onnx_runtime == "openvino" and method.startswith("onnxruntime"):
                warn(
                    f"{path}: an onnxruntime int8 export from an earlier finsent, slow on OpenVINO; re-run "
                    f"`finsent export-onnx --model_dir {self.model_dir}` (NNCF int8, about 2x faster)"
                )
            self.backend: Callable[[dict], np.ndarray] = OnnxBackend(
                path, num_threads, onnx_runtime, precision, streams
            )
            input_names = self.backend.input_names
        else:
            self.backend = TorchBackend(self.model_dir, num_threads, device, precision)
            input_names = list(self.backend.tokenizer.model_input_names)
        if self.backend.num_labels != len(self.info.labels):
            raise FinsentError(
                f"{self.model_dir}: the model has {self.backend.num_labels} outputs but the run lists {len(self.info.labels)} labels"
            )
        self.tokenizer = self.backend.tokenizer
        self.input_names = [n for n in input_names if n in ("input_ids", "attention_mask", "token_type_ids")]
        self.batch_size = batch_size
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.streams = streams  # forward passes that may run at once, from as many calling threads
        self._pool: ThreadPoolExecutor | None = None  # the threads that run them (streams > 1)
        self._encoder = truncating_encoder(self.tokenizer, self.info.max_length)
        self.tokenizer_threads = max(1, min(8, (os.cpu_count() or 2) - 1))
        self.backend_choice: dict | None = None  # how inference.factory chose the backend (--backend auto)

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def early_exit(self) -> bool:
        """Whether the backend lets confident sentences out at intermediate layers (finsent.early_exit)."""
        return bool(getattr(self.backend, "early_exit", False))

    @property
    def extra_fields(self) -> tuple[str, ...]:
        return ("answered_by",) if self.early_exit else ()

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

    def _tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        if not texts:
            return [], np.zeros(0, dtype=bool)
        encodings = self._encoder.encode_batch_fast(list(texts))  # the GIL is released while Rust tokenizes
        truncated = np.fromiter((bool(e.overflowing) for e in encodings), dtype=bool, count=len(encodings))
        return [e.ids for e in encodings], truncated

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

        def tokenize(start: int) -> tuple[list[list[int]], np.ndarray]:
            return self._tokenize(texts[start : start + TOKENIZE_CHUNK])

        with ThreadPoolExecutor(self.tokenizer_threads, thread_name_prefix="finsent-tokenize") as pool:
            for start, (ids, truncated) in zip(starts, pool.map(tokenize, starts)):
                yield start, ids, truncated

    def _logits(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Raw logits in input order, the truncation flags, and the layer that answered each text where the
        backend exits early (None otherwise)."""
        self._check_unicode(texts)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        truncated = np.zeros(len(texts), dtype=bool)
        layer = np.zeros(len(texts), dtype=np.int64) if self.early_exit else None
        for start, ids, trunc in self.encode_chunks(texts):
            truncated[start : start + len(ids)] = trunc
            order = np.argsort(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)), kind="stable")
            groups = [order[first : first + self.batch_size] for first in range(0, len(order), self.batch_size)]
            if layer is None:
                for idx, logits in zip(groups, self._forward([self._feeds([ids[i] for i in idx]) for idx in groups])):
                    out[start + idx] = logits
                continue
            window = self.backend.window  # batches re-batched together after each exit
            for w in range(0, len(groups), window):
                part = groups[w : w + window]
                scored = self.backend.score_batches([self._feeds([ids[i] for i in idx]) for idx in part])
                for idx, (logits, where) in zip(part, scored):
                    out[start + idx], layer[start + idx] = logits, where
        return out, truncated, layer

    def _forward(self, feeds: list[dict[str, np.ndarray]]) -> Iterator[np.ndarray]:
        """The backend's logits per batch, in order; with streams > 1 that many batches are scored at once, each
        pass on its share of the threads (two one-thread passes can outrun one two-thread pass: tuning measures it)."""
        if self.streams == 1 or len(feeds) == 1:
            return map(self.backend, feeds)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="finsent-stream")
        return self._pool.map(self.backend, feeds)

    def logits(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits in input order and the truncation flags."""
        return self._logits(texts)[:2]

    def score(self, texts: Sequence[str]) -> Scores:
        """Probabilities calibrated with the run's temperature (1.0 where it has none)."""
        logits, truncated, layer = self._logits(texts)
        answered = None if layer is None else self.backend.answered_by(layer)
        return Scores(softmax(logits, self.info.temperature), truncated, self.labels, answered)

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
            "precision": getattr(self.backend, "precision", None),
            "model_name": self.info.model_name,
            "use_lora": self.info.use_lora,
            "max_length": self.info.max_length,
            "temperature": self.info.temperature,
            "metrics": self.info.metrics,
        }
        if self.backend_choice:
            meta["backend_choice"] = self.backend_choice
        if self.early_exit:
            meta["early_exit"] = self.backend.metadata()
        if self.backend_name == "onnx":
            meta["onnx"] = {
                "file": self.backend.path.name,
                "runtime": self.backend.runtime,
                **(read_export_info(self.backend.path.parent).get("quantization") or {}),
            }
        return meta
