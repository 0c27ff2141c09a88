"""The engines that can run a run's model on the CPU, as data, and the choice `finsent export-onnx` / `tune-engine`
recorded in export.json (`engine`): which engine was fastest on this machine at >= 99.5 % label agreement with fp32
PyTorch. finsent.export.tuning makes the choice; this module reads it for the predictor factory."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.core.hardware import BF16_FLAGS, cpu_signature, same_cpu
from finsent.runs.folder import ONNX_FP32, ONNX_INT8, ONNX_ORT_INT8, read_export_info

AGREEMENT_GOAL = 0.995  # label agreement with fp32 PyTorch an engine needs on the run's held-out sentences
TIE = 0.05  # engines within 5 % of the fastest's rate are a tie: the one that agrees most with fp32 wins


@dataclass(frozen=True)
class Engine:
    """One way to run the model: a backend, the export file it loads, the ONNX runtime, the precision outside int8
    products, and the CPU flags it needs (any of them)."""

    name: str
    backend: str  # torch | onnx
    precision: str = "fp32"  # fp32 | bf16
    file: str | None = None  # onnx: the file of the export folder
    runtime: str | None = None  # onnx: openvino | onnxruntime
    needs: tuple[str, ...] = ()

    def runs_here(self, flags: list[str]) -> bool:
        return not self.needs or any(f in flags for f in self.needs)

    def predictor_kwargs(self) -> dict:
        """What finsent.inference.predictor.Predictor takes for this engine."""
        onnx = {"onnx_file": self.file, "onnx_runtime": self.runtime} if self.backend == "onnx" else {}
        return {"backend": self.backend, "precision": self.precision, **onnx}


ENGINES: dict[str, Engine] = {
    e.name: e
    for e in (
        Engine("openvino-int8", "onnx", file=ONNX_INT8, runtime="openvino"),  # NNCF QDQ int8, fp32 elsewhere
        Engine(
            "onnxruntime-int8", "onnx", file=ONNX_ORT_INT8, runtime="onnxruntime"
        ),  # dynamic int8 on the fused graph
        Engine("openvino-bf16", "onnx", "bf16", ONNX_FP32, "openvino", BF16_FLAGS),
        Engine("torch-bf16", "torch", "bf16", needs=BF16_FLAGS),
        Engine("openvino-fp32", "onnx", file=ONNX_FP32, runtime="openvino"),
        Engine("onnxruntime-fp32", "onnx", file=ONNX_FP32, runtime="onnxruntime"),
        Engine("torch-fp32", "torch"),  # the reference every other engine is checked against
    )
}
# the engines a run's own early-exit segments run on (exit_segment.N[.int8].onnx); tuning chooses each one's thresholds
EXIT_ENGINES = ("openvino-int8", "openvino-bf16", "openvino-fp32")
DEFAULT_ENGINE = "openvino-int8"  # --backend onnx where no tuning is recorded (an export from an earlier finsent)


def engine(name: str) -> Engine:
    if name not in ENGINES:
        raise FinsentError(f"--engine {name!r}: expected one of {', '.join(ENGINES)}")
    return ENGINES[name]


def tuning(export_dir: Path) -> dict | None:
    """export.json's `engine` block (None where the export was not tuned)."""
    return read_export_info(export_dir).get("engine") or None


def choose(candidates: list[dict], tie: float = TIE) -> dict | None:
    """The engine to run among measured candidates: the fastest that passed, except that among those within `tie` of
    its rate (a tie on a shared machine, where one timing varies by about that much) the one that agrees most with
    fp32 PyTorch wins. None where none passed."""
    passed = [c for c in candidates if c.get("passed")]
    if not passed:
        return None
    fastest = max(c["sentences_per_s"] for c in passed)
    close = [c for c in passed if c["sentences_per_s"] >= (1 - tie) * fastest]
    return max(close, key=lambda c: (c["agreement"], c["sentences_per_s"]))


def tuned_engine(
    export_dir: Path, onnx_only: bool = False, among: tuple[str, ...] | None = None
) -> tuple[Engine, dict] | None:
    """The engine tuning chose on the machine it ran on (choose() over the ONNX engines with onnx_only, over `among`
    where given), and the tuning record; None where there is none."""
    record = tuning(export_dir)
    if not record:
        return None
    candidates = [c for c in record.get("candidates", []) if c.get("name") in ENGINES]
    if onnx_only:
        candidates = [c for c in candidates if ENGINES[c["name"]].backend == "onnx"]
    if among is not None:
        candidates = [c for c in candidates if c["name"] in among]
    best = choose(candidates)
    return (ENGINES[best["name"]], record) if best else None


def tuned_streams(record: dict | None, name: str) -> int:
    """The concurrent forward passes tuning measured fastest for engine `name` on batch jobs (1 where none was)."""
    row = next((c for c in (record or {}).get("candidates", []) if c.get("name") == name), None)
    return int((row or {}).get("streams") or 1)


def stale_warning(export_dir: Path, model_dir: Path, record: dict) -> str | None:
    """One line where the export was tuned on another CPU (model or flags), naming the command that re-tunes it."""
    here = cpu_signature()
    tuned_on = record.get("cpu") or {}
    if same_cpu(tuned_on, here):
        return None
    return (
        f"{export_dir}: engine {record.get('chosen')} was chosen on {tuned_on.get('model')} "
        f"({' '.join(tuned_on.get('flags') or []) or 'no listed flags'}), this is {here['model']} "
        f"({' '.join(here['flags']) or 'no listed flags'}); run `finsent tune-engine --model_dir {model_dir}` "
        "to choose the fastest engine for this CPU"
    )


def as_record(e: Engine) -> dict:
    return {k: v for k, v in asdict(e).items() if k != "needs"}
