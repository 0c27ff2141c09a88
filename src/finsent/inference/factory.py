"""One predictor factory: the options every scoring command shares (backend, device, cascade, early exit) as data, and
the one function that turns them into a Predictor or a CascadePredictor."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from finsent.core.errors import FinsentError
from finsent.inference.backends import BACKENDS, DEVICES, ONNX_RUNTIMES, check_onnx_fresh, find_onnx
from finsent.inference.cascade import CascadePredictor, early_exit_dir
from finsent.inference.predictor import Predictor
from finsent.runs.folder import ONNX_INT8

AUTO = "auto"
BACKEND_CHOICES = (AUTO, *BACKENDS)


def _help(text: str, **argparse_kwargs) -> dict:
    return {"help": text, **argparse_kwargs}


@dataclass(kw_only=True)
class PredictorOptions:
    """How to score with a run folder; the flags of predict, serve, analyze and score are generated from it."""

    backend: Literal["auto", "torch", "onnx"] = field(
        default=AUTO,
        metadata=_help(
            "auto: the run's int8 export (finsent export-onnx) where it exists and matches the weights, else torch; "
            "torch: the merged PyTorch model; onnx: the int8 export (default: %(default)s)"
        ),
    )
    onnx_runtime: Literal["openvino", "onnxruntime"] = field(
        default=ONNX_RUNTIMES[0],
        metadata=_help(
            "what runs the ONNX model: OpenVINO (about twice as fast on int8) or onnxruntime (default: %(default)s)"
        ),
    )
    onnx_file: str = field(
        default=ONNX_INT8,
        metadata=_help(
            "which file of the export runs --backend onnx: model.int8.onnx or model.onnx (fp32) (default: %(default)s)"
        ),
    )
    batch_size: int | None = field(
        default=None,
        metadata=_help("sentences per forward pass, batches sorted by length (default: 32 on the CPU, 512 on a GPU)"),
    )
    threads: int | None = field(
        default=None, metadata=_help("CPU threads for inference (default: the library's choice, all cores)")
    )
    device: Literal["cpu", "cuda"] = field(
        default="cpu",
        metadata=_help(
            "cpu (fp32), or cuda: the torch backend on a GPU in bf16 (fp16 where bf16 is unsupported) (default: %(default)s)"
        ),
    )
    cascade: str | None = field(
        default=None,
        metadata=_help(
            "re-score with this teacher run the sentences the student (--model_dir) is unsure of", metavar="TEACHER_RUN"
        ),
    )
    early_exit: bool = field(
        default=False,
        metadata=_help(
            "let confident sentences out early: at the exits trained with the model (`finsent distill --exit_layers 1 3`), "
            "or else through a shallower student distilled from --model_dir (`finsent distill --teacher RUN "
            "--num_layers 2`, in <model_dir>/early_exit or --early_exit_dir)"
        ),
    )
    early_exit_dir: str | None = field(
        default=None,
        metadata=_help("the early exit's run folder (default: <model_dir>/early_exit)", metavar="EXIT_RUN"),
    )
    cascade_threshold: float | None = field(
        default=None,
        metadata=_help(
            "defer to the teacher (or the full model, with --early_exit) below this margin between the top two "
            "probabilities (default: the one `finsent distill` chose on validation)"
        ),
    )

    def __post_init__(self) -> None:
        if self.backend not in BACKEND_CHOICES:
            raise FinsentError(f"backend {self.backend!r}: expected one of {', '.join(BACKEND_CHOICES)}")
        if self.device not in DEVICES:
            raise FinsentError(f"device {self.device!r}: expected one of {', '.join(DEVICES)}")
        if self.cascade and (self.early_exit or self.early_exit_dir):
            raise FinsentError("--cascade and --early_exit: pass one of them")


def resolve_backend(
    model_dir: str | Path, backend: str = AUTO, device: str = "cpu", onnx_file: str = ONNX_INT8
) -> tuple[str, str]:
    """(backend, why): `auto` picks the run's int8 ONNX export where it exists and was made from the weights the run
    holds now, else torch (and torch on a GPU)."""
    if backend != AUTO:
        return backend, "as asked"
    if device != "cpu":
        return "torch", f"auto: only torch runs on {device}"
    try:
        path = find_onnx(model_dir, onnx_file)
        check_onnx_fresh(Path(model_dir), path)
    except FinsentError:
        return (
            "torch",
            f"auto: no fresh {onnx_file} export in {model_dir} (`finsent export-onnx` gives about 4x the speed)",
        )
    kind = "int8" if onnx_file == ONNX_INT8 else "fp32"
    return "onnx", f"auto: the {kind} export {path}"


def build_predictor(model_dir: str | Path, options: PredictorOptions | None = None):
    """A Predictor, or a CascadePredictor for --cascade and for the shallow-student early exit."""
    from finsent.models.exits import has_exits

    opts = options or PredictorOptions()
    backend, why = resolve_backend(model_dir, opts.backend, opts.device, opts.onnx_file)
    on = dict(
        backend=backend,
        batch_size=opts.batch_size,
        num_threads=opts.threads,
        device=opts.device,
        onnx_runtime=opts.onnx_runtime,
        onnx_file=opts.onnx_file,
    )
    early_exit = opts.early_exit or bool(opts.early_exit_dir)
    if early_exit and not opts.early_exit_dir and has_exits(model_dir):  # exits trained with the model
        if opts.cascade_threshold is not None:
            raise FinsentError(
                f"--cascade_threshold: {model_dir} has its own exits, each with the threshold chosen on validation; leave it out"
            )
        return _chosen(Predictor(model_dir, **on, early_exit=True), opts.backend, why)
    predictor = _chosen(Predictor(model_dir, **on), opts.backend, why)
    if early_exit:  # the shallow exit: its own run folder, so auto chooses for it on its own
        exit_dir = early_exit_dir(model_dir, opts.early_exit_dir)
        shallow_backend = resolve_backend(exit_dir, opts.backend, opts.device, opts.onnx_file)[0]
        shallow = Predictor(exit_dir, **{**on, "backend": shallow_backend})
        return CascadePredictor(shallow, predictor, opts.cascade_threshold, early_exit=True)
    if opts.cascade:
        teacher = Predictor(opts.cascade, backend="torch", batch_size=opts.batch_size, num_threads=opts.threads)
        return CascadePredictor(predictor, teacher, opts.cascade_threshold)
    return predictor


def _chosen(predictor: Predictor, requested: str, why: str) -> Predictor:
    predictor.backend_choice = {"requested": requested, "reason": why}
    return predictor
