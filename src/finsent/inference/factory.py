"""One predictor factory: the options every scoring command shares (backend, device, cascade, early exit) as data, and
the one function that turns them into a Predictor or a CascadePredictor."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from finsent.core.errors import FinsentError
from finsent.core.hardware import usable_cores
from finsent.core.logs import warn
from finsent.inference.backends import BACKENDS, DEVICES, ONNX_RUNTIMES, check_onnx_fresh, find_onnx
from finsent.inference.cascade import CascadePredictor, early_exit_dir
from finsent.inference.engines import EXIT_ENGINES, engine, stale_warning, tuned_engine, tuned_streams, tuning
from finsent.inference.predictor import Predictor
from finsent.runs.folder import ONNX_DIR, ONNX_INT8, WEIGHT_FILES

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
            "auto: the engine `finsent export-onnx` chose for this CPU where the run has an export that matches its "
            "weights, else torch; torch: the merged PyTorch model (fp32); onnx: the fastest ONNX engine of the export "
            "(default: %(default)s)"
        ),
    )
    engine: str | None = field(
        default=None,
        metadata=_help(
            "run this engine (openvino-int8, onnxruntime-int8, openvino-bf16, torch-bf16, openvino-fp32, "
            "onnxruntime-fp32, torch-fp32) instead of the one `finsent export-onnx` / `tune-engine` chose for this CPU"
        ),
    )
    onnx_runtime: Literal["openvino", "onnxruntime"] | None = field(
        default=None,
        metadata=_help(
            "what runs the ONNX model, OpenVINO or onnxruntime (default: the tuned engine's, else openvino)"
        ),
    )
    onnx_file: str | None = field(
        default=None,
        metadata=_help(
            "which file of the export runs --backend onnx: model.int8.onnx or model.onnx (fp32) (default: the tuned "
            "engine's, else model.int8.onnx)"
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
        if self.engine is not None:
            chosen = engine(self.engine)
            if self.backend not in (AUTO, chosen.backend):
                raise FinsentError(
                    f"--engine {self.engine} runs on {chosen.backend}: leave out --backend {self.backend}"
                )
            if self.device != "cpu":
                raise FinsentError(f"--engine {self.engine}: engines run on the CPU; leave out --device {self.device}")


def export_folder(model_dir: str | Path) -> Path:
    """Where a run's export lives: <run>/onnx, or the folder itself for an exported folder."""
    model_dir = Path(model_dir)
    return model_dir / ONNX_DIR if (model_dir / ONNX_DIR).is_dir() else model_dir


def _fresh_export(model_dir: str | Path, onnx_file: str) -> Path | None:
    try:
        path = find_onnx(model_dir, onnx_file)
        check_onnx_fresh(Path(model_dir), path)
    except FinsentError:
        return None
    return path


def _tuned(model_dir: str | Path, onnx_only: bool, among: tuple[str, ...] | None) -> tuple[dict, str] | None:
    """The engine tuned for the run's export (of `among` where given) as Predictor keyword arguments, with the
    streams tuning measured fastest for it, warning once where it was tuned on another CPU; and why."""
    found = tuned_engine(export_folder(model_dir), onnx_only, among)
    if found is None:
        return None
    chosen, record = found
    stale = stale_warning(export_folder(model_dir), Path(model_dir), record)
    if stale:
        warn(stale)
    rate = next((c["sentences_per_s"] for c in record["candidates"] if c["name"] == chosen.name), None)
    why = f"the engine tuned for {record.get('cpu', {}).get('model')}: {chosen.name}, {rate:.0f} sentences/s"
    return {**chosen.predictor_kwargs(), "streams": tuned_streams(record, chosen.name)}, why


def resolve_engine(
    model_dir: str | Path, opts: PredictorOptions, onnx_only: bool = False, among: tuple[str, ...] | None = None
) -> tuple[dict, str]:
    """(Predictor keyword arguments: backend, precision, for onnx the file and runtime, and for a tuned engine the
    streams tuning measured fastest for batch jobs; why). `auto` takes the
    engine export-onnx / tune-engine chose for the CPU where the run has a fresh export, else torch; `onnx` the
    fastest ONNX engine of that choice unless --onnx_runtime / --onnx_file say otherwise."""
    explicit = {"onnx_file": opts.onnx_file or ONNX_INT8, "onnx_runtime": opts.onnx_runtime or ONNX_RUNTIMES[0]}
    asked_onnx = opts.onnx_file is not None or opts.onnx_runtime is not None
    onnx_only = onnx_only or not any((Path(model_dir) / n).is_file() for n in WEIGHT_FILES)  # an exported folder
    if opts.engine is not None:
        streams = tuned_streams(tuning(export_folder(model_dir)), opts.engine)
        return {**engine(opts.engine).predictor_kwargs(), "streams": streams}, f"--engine {opts.engine}"
    if opts.backend == "torch":
        return {"backend": "torch"}, "as asked"
    if opts.device != "cpu":
        return {"backend": "torch"}, f"auto: only torch runs on {opts.device}"
    if opts.backend == "onnx":
        tuned = None if asked_onnx else _tuned(model_dir, True, among)
        return tuned or ({"backend": "onnx", **explicit}, "as asked")
    if _fresh_export(model_dir, explicit["onnx_file"]) is None:
        why = f"auto: no fresh {explicit['onnx_file']} export in {model_dir} (`finsent export-onnx` gives about 4x the speed)"
        return {"backend": "torch"}, why
    tuned = None if asked_onnx else _tuned(model_dir, onnx_only, among)
    if tuned:
        return tuned[0], f"auto: {tuned[1]}"
    kind = "int8" if explicit["onnx_file"] == ONNX_INT8 else "fp32"
    return {"backend": "onnx", **explicit}, f"auto: the {kind} export {find_onnx(model_dir, explicit['onnx_file'])}"


def resolve_backend(model_dir: str | Path, backend: str = AUTO, device: str = "cpu") -> tuple[str, str]:
    """(torch or onnx, why) for the commands that take a backend but no engine (`finsent score`): auto is the
    export's fastest ONNX engine where the run has a fresh export (building a predictor with backend onnx then
    loads that engine), else torch."""
    chosen, why = resolve_engine(model_dir, PredictorOptions(backend=backend, device=device), onnx_only=True)
    return chosen["backend"], why


def auto_streams(backend: str, threads: int | None, combined: bool) -> int:
    """Concurrent forward passes for a server (--streams auto): two on an ONNX engine with two cores or more (two
    single-thread passes over a server's small batches outrun one two-thread pass), else one; one for the combined
    predictors (early exit, cascade)."""
    return 2 if backend == "onnx" and not combined and (threads or usable_cores()) >= 2 else 1


TUNED = "tuned"  # build_predictor's streams for batch jobs: the count the engine's tuning measured fastest


def build_predictor(model_dir: str | Path, options: PredictorOptions | None = None, streams: int | str | None = TUNED):
    """A Predictor, or a CascadePredictor for --cascade and for the shallow-student early exit. streams: forward
    passes that may run at once: TUNED (batch jobs) the count tuning measured fastest for the engine on this CPU (1
    where none was), None (a server's --streams auto) auto_streams, or a number."""
    from finsent.models.exits import has_exits

    opts = options or PredictorOptions()
    early_exit = opts.early_exit or bool(opts.early_exit_dir)
    own_exits = early_exit and not opts.early_exit_dir and has_exits(model_dir)
    among = EXIT_ENGINES if own_exits else None  # the engines the run's own exit segments were tuned on
    chosen, why = resolve_engine(model_dir, opts, onnx_only=early_exit, among=among)  # exits: ONNX or fp32 torch
    tuned = chosen.pop("streams", 1)
    combined = early_exit or bool(opts.cascade)
    if streams == TUNED:  # an early exit or a cascade scores one batch at a time
        one = chosen["backend"] != "onnx" or combined
        streams = 1 if one else min(tuned, opts.threads or usable_cores())
    elif streams is None:
        streams = auto_streams(chosen["backend"], opts.threads, combined)
    elif streams > 1 and combined:
        raise FinsentError(f"--streams {streams}: one forward pass at a time with --early_exit or --cascade; use 1")
    on = dict(batch_size=opts.batch_size, num_threads=opts.threads, device=opts.device, **chosen)
    if own_exits:  # exits trained with the model
        if opts.cascade_threshold is not None:
            raise FinsentError(
                f"--cascade_threshold: {model_dir} has its own exits, each with the threshold chosen on validation; leave it out"
            )
        return _chosen(Predictor(model_dir, **on, early_exit=True), opts.backend, why)
    predictor = _chosen(Predictor(model_dir, **on, streams=streams), opts.backend, why)
    if early_exit:  # the shallow exit: its own run folder, so auto chooses for it on its own
        exit_dir = early_exit_dir(model_dir, opts.early_exit_dir)
        shallow_engine = resolve_engine(exit_dir, opts, onnx_only=True)[0]
        shallow_engine.pop("streams", None)  # a cascade scores one batch at a time
        shallow = Predictor(exit_dir, **{**on, **shallow_engine})
        return CascadePredictor(shallow, predictor, opts.cascade_threshold, early_exit=True)
    if opts.cascade:
        teacher = Predictor(opts.cascade, backend="torch", batch_size=opts.batch_size, num_threads=opts.threads)
        return CascadePredictor(predictor, teacher, opts.cascade_threshold)
    return predictor


def _chosen(predictor: Predictor, requested: str, why: str) -> Predictor:
    predictor.backend_choice = {"requested": requested, "reason": why}
    return predictor
