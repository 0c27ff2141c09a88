"""Inference on a trained run folder: tokenize, sort by length, batch, softmax with the run's temperature."""

from __future__ import annotations

import copy
import hashlib
import itertools
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finsent.errors import FinsentError
from finsent.metrics import softmax
from finsent.runs import ONNX_DIR, ONNX_INT8, read_export_info, read_model_info, warn

BACKENDS = ("torch", "onnx")
ONNX_RUNTIMES = ("openvino", "onnxruntime")  # what runs --backend onnx; the first is the default
DEVICES = ("cpu", "cuda")
BATCH_SIZE = {"cpu": 32, "cuda": 512}
# Texts per tokenizer call: calls after the first run ahead on a thread pool (the fast tokenizer releases the GIL while
# it encodes) and overlap the model; each chunk is sorted by length and batched on its own.
TOKENIZE_CHUNK = 4096
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
    """An exported ONNX model (int8 by default) on OpenVINO's CPU runtime, or on onnxruntime's CPU provider.

    OpenVINO compiles the QDQ int8 graph into int8 kernels and runs it about twice as fast as onnxruntime
    (bench/results/onnx_candidates.md); its precision is pinned to fp32 outside the int8 products, so that labels do
    not depend on whether the CPU has bf16."""

    name = "onnx"

    def __init__(self, onnx_path: Path, num_threads: int | None = None, runtime: str = ONNX_RUNTIMES[0]):
        from finsent.modeling import load_tokenizer

        if runtime not in ONNX_RUNTIMES:
            raise FinsentError(f"--onnx_runtime {runtime!r}: expected one of {', '.join(ONNX_RUNTIMES)}")
        self.path = onnx_path
        self.runtime = runtime
        try:
            if runtime == "openvino":
                self._load_openvino(num_threads)
            else:
                self._load_onnxruntime(num_threads)
        except ImportError as e:
            raise FinsentError(
                f"--onnx_runtime {runtime}: {e.name or runtime} is not installed; pip install {e.name or runtime}, or pass the other runtime"
            ) from None
        except Exception as e:  # noqa: BLE001 - both runtimes raise their own exception types
            raise FinsentError(
                f"{onnx_path}: cannot load the ONNX model on {runtime} ({str(e).strip().splitlines()[0]}); re-run finsent export-onnx"
            ) from None
        self.tokenizer = load_tokenizer(str(onnx_path.parent))

    def _load_openvino(self, num_threads: int | None) -> None:
        import openvino as ov

        config = {
            "INFERENCE_NUM_THREADS": num_threads or 0,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            # OpenVINO pins its threads to cores by default: two processes (Ray workers, a server beside a job) then
            # share the same cores while others idle
            "ENABLE_CPU_PINNING": False,
        }
        compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        self.input_names = [i.any_name for i in compiled.inputs]
        self.num_labels = int(compiled.outputs[0].get_partial_shape()[-1].get_length())
        requests = threading.local()  # an infer request serves one call at a time: one per calling thread

        def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            if not hasattr(requests, "request"):
                requests.request = compiled.create_infer_request()
            result = requests.request.infer(feeds)  # its output buffers are reused by the next call: copy them
            return [result[i].copy() for i in range(len(compiled.outputs))]

        self._run = run

    def _load_onnxruntime(self, num_threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or 0
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in session.get_inputs()]
        self.num_labels = int(session.get_outputs()[0].shape[-1])
        self._run = lambda feeds: session.run(None, feeds)

    def outputs(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output of the graph (an early-exit segment has two: logits, hidden states)."""
        return self._run({k: feeds[k] for k in self.input_names})

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.outputs(feeds)[0]


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
        elif early_exit:
            if device != "cpu":
                raise FinsentError(f"--early_exit runs on the CPU; leave out --device {device}")
            from finsent.early_exit import exit_backend

            self.backend = exit_backend(self.model_dir, backend, num_threads, onnx_file, onnx_runtime)
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
            self.backend: Callable[[dict], np.ndarray] = OnnxBackend(path, num_threads, onnx_runtime)
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

    def _tokenize(self, texts: Sequence[str], tokenizer=None) -> tuple[list[list[int]], np.ndarray]:
        if not texts:  # the tokenizer fails on an empty batch
            return [], np.zeros(0, dtype=bool)
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
                for idx in groups:
                    out[start + idx] = self.backend(self._feeds([ids[i] for i in idx]))
                continue
            window = self.backend.window  # batches re-batched together after each exit
            for w in range(0, len(groups), window):
                part = groups[w : w + window]
                scored = self.backend.score_batches([self._feeds([ids[i] for i in idx]) for idx in part])
                for idx, (logits, where) in zip(part, scored):
                    out[start + idx], layer[start + idx] = logits, where
        return out, truncated, layer

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
            "model_name": self.info.model_name,
            "use_lora": self.info.use_lora,
            "max_length": self.info.max_length,
            "temperature": self.info.temperature,
            "metrics": self.info.metrics,
        }
        if self.early_exit:
            meta["early_exit"] = self.backend.metadata()
        if self.backend_name == "onnx":
            meta["onnx"] = {
                "file": self.backend.path.name,
                "runtime": self.backend.runtime,
                **(read_export_info(self.backend.path.parent).get("quantization") or {}),
            }
        return meta


def margins(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row."""
    top = np.sort(probs, axis=1)
    return top[:, -1] - top[:, -2]


class CascadePredictor:
    """A fast student scores every sentence; a teacher re-scores those whose calibrated margin is below a threshold.

    As an early exit (`early_exit=True`) the student is a shallower model distilled from the full one (the teacher):
    the pair then speaks as the full model (its version, labels and metadata)."""

    extra_fields = ("answered_by",)

    def __init__(
        self, student: Predictor, teacher: Predictor, threshold: float | None = None, early_exit: bool = False
    ):
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
        self.early_exit = early_exit
        self.primary = teacher if early_exit else student
        self.info = self.primary.info
        self.model_dir = self.primary.model_dir
        self.deferred = self.scored = 0

    @property
    def labels(self) -> tuple[str, ...]:
        return self.student.labels

    @property
    def backend_name(self) -> str:
        if self.early_exit:
            return f"early_exit({self.teacher.backend_name})"
        return f"cascade({self.student.backend_name}+{self.teacher.backend_name})"

    def score(self, texts: Sequence[str]) -> Scores:
        scores = self.student.score(texts)
        defer = np.flatnonzero(margins(scores.probs) < self.threshold) if len(texts) else np.zeros(0, dtype=int)
        first, second = (
            ("early_exit", "full") if self.early_exit else (self.student.info.version, self.teacher.info.version)
        )
        answered = [first] * len(texts)
        if len(defer):
            again = self.teacher.score([texts[i] for i in defer])
            scores.probs[defer] = again.probs
            scores.truncated[defer] = again.truncated
            for i in defer:
                answered[i] = second
        self.scored += len(texts)
        self.deferred += len(defer)
        return Scores(scores.probs, scores.truncated, self.labels, answered)

    def predict(self, texts: Sequence[str]) -> list[dict]:
        return self.score(texts).records()

    def metadata(self) -> dict:
        other, key = (self.student, "early_exit") if self.early_exit else (self.teacher, "cascade")
        share = self.deferred / self.scored if self.scored else None
        return {
            **self.primary.metadata(),
            "backend": self.backend_name,
            key: {
                ("model" if self.early_exit else "teacher"): other.metadata(),
                "margin_threshold": self.threshold,
                ("full_model_share" if self.early_exit else "deferred_share"): share,
            },
        }


def early_exit_dir(model_dir: str | Path, exit_dir: str | Path | None = None) -> Path:
    """The early-exit run of a full run (default <run>/early_exit), checked to be distilled from that run."""
    from finsent.runs import EARLY_EXIT_DIR

    model_dir = Path(model_dir)
    exit_dir = Path(exit_dir) if exit_dir else model_dir / EARLY_EXIT_DIR
    how = f"train one with `finsent distill --teacher {model_dir} --num_layers 2 --output_dir {model_dir / EARLY_EXIT_DIR}`"
    if not exit_dir.is_dir():
        raise FinsentError(f"{exit_dir}: no early-exit model; {how}")
    source = read_model_info(exit_dir).extra.get("cascade", {}).get("teacher")
    if source and Path(source).is_dir() and Path(source).resolve() != model_dir.resolve():
        raise FinsentError(
            f"{exit_dir}: distilled from {source}, not {model_dir}, so its exit threshold was chosen against another "
            f"model; {how}"
        )
    return exit_dir
