"""Inference engines: the merged PyTorch model, or an ONNX export on OpenVINO or onnxruntime."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from finsent.core.errors import FinsentError
from finsent.runs.folder import ONNX_DIR, ONNX_INT8, WEIGHT_FILES, read_export_info, weights_digest

BACKENDS = ("torch", "onnx")
ONNX_RUNTIMES = ("openvino", "onnxruntime")  # what runs --backend onnx; the first is the default
DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "bf16")  # what the products outside int8 run in on the CPU (bf16: OpenVINO or torch/oneDNN)
PICKLE_FILES = ("adapter_model.bin", "pytorch_model.bin")


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


def torch_device(device: str, precision: str = "fp32"):
    """(torch.device, dtype) for --device: fp32 on the CPU (bf16 where asked: oneDNN's AMX/AVX512-BF16 kernels); on a
    CUDA GPU bf16 where it is supported, else fp16."""
    import torch

    if device not in DEVICES:
        raise FinsentError(f"--device {device!r}: expected one of {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise FinsentError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if device == "cpu":
        return torch.device("cpu"), torch.bfloat16 if precision == "bf16" else torch.float32
    if not torch.cuda.is_available():
        raise FinsentError(
            "--device cuda: PyTorch sees no CUDA GPU here (torch.cuda.is_available() is False); use --device cpu"
        )
    return torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class TorchBackend:
    """The merged PyTorch model (safetensors only), fp32 (or bf16) on the CPU or bf16/fp16 on a CUDA GPU."""

    name = "torch"

    def __init__(self, model_dir: Path, num_threads: int | None = None, device: str = "cpu", precision: str = "fp32"):
        import torch

        from finsent.models.loading import load_trained

        self.device, self.dtype = torch_device(device, precision)
        self.precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")
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

    OpenVINO compiles the QDQ int8 graph into int8 kernels; its precision is pinned to fp32 outside the int8 products
    (so that labels do not depend on whether the CPU has bf16), unless precision="bf16" asks for bf16 (the engine tuner,
    finsent.export.engines, checks such a choice against fp32 PyTorch before it becomes a run's default)."""

    name = "onnx"

    def __init__(
        self,
        onnx_path: Path,
        num_threads: int | None = None,
        runtime: str = ONNX_RUNTIMES[0],
        precision: str = "fp32",
        streams: int = 1,
    ):
        from finsent.models.loading import load_tokenizer

        if runtime not in ONNX_RUNTIMES:
            raise FinsentError(f"--onnx_runtime {runtime!r}: expected one of {', '.join(ONNX_RUNTIMES)}")
        if precision not in PRECISIONS or (precision == "bf16" and runtime != "openvino"):
            raise FinsentError(f"precision {precision!r} on {runtime}: bf16 runs on OpenVINO only; expected fp32")
        self.path = onnx_path
        self.runtime = runtime
        self.precision = precision
        try:
            if runtime == "openvino":
                self._load_openvino(num_threads, precision, streams)
            else:
                self._load_onnxruntime(num_threads, streams)
        except ImportError as e:
            raise FinsentError(
                f"--onnx_runtime {runtime}: {e.name or runtime} is not installed; pip install {e.name or runtime}, or pass the other runtime"
            ) from None
        except Exception as e:  # noqa: BLE001 - both runtimes raise their own exception types
            raise FinsentError(
                f"{onnx_path}: cannot load the ONNX model on {runtime} ({str(e).strip().splitlines()[0]}); re-run finsent export-onnx"
            ) from None
        self.tokenizer = load_tokenizer(str(onnx_path.parent))

    def _load_openvino(self, num_threads: int | None, precision: str, streams: int = 1) -> None:
        import openvino as ov

        config = {
            "INFERENCE_NUM_THREADS": num_threads or 0,
            # streams > 1: that many calls run at once (from as many threads), the threads shared out among them
            **(
                {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams}
                if streams > 1
                else {"PERFORMANCE_HINT": "LATENCY"}
            ),
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
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

    def _load_onnxruntime(self, num_threads: int | None, streams: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # streams > 1: as many concurrent run() calls (a session is thread-safe), each on its share of the threads
        options.intra_op_num_threads = (
            max(1, (num_threads or os.cpu_count() or 1) // streams) if streams > 1 else num_threads or 0
        )
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
