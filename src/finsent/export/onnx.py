"""`finsent export-onnx`: merge the LoRA adapter, export ONNX, fuse it (fp32), check it, quantize it to QDQ int8, and
the early-exit segments where the run has exits; written with the tokenizer, the run's metadata and export.json."""

from __future__ import annotations

import copy
import datetime as dt
import shutil
import tempfile
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.export.exits import export_exit_segments, int8_exit_thresholds, threshold_texts
from finsent.export.graphs import (
    EXPORTER,
    OPSET,
    PARITY_ATOL,
    QUANTIZATION,
    _encode,
    build_int8,
    build_ort_int8,
    calibration_texts,
    check_parity,
    export_fp32,
    fuse,
)
from finsent.runs.folder import (
    ONNX_DIR,
    ONNX_FP32,
    ONNX_INT8,
    ONNX_ORT_INT8,
    RUN_METADATA_FILES,
    read_model_info,
    weights_digest,
    write_export_info,
)


def export_onnx(
    model_dir: str | Path,
    output_dir: str | Path | None = None,
    quantize: bool = True,
    data_path: str | Path | None = None,
    tune: bool = True,
) -> dict:
    """Write `<model_dir>/onnx/`: the fp32 and int8 ONNX models, the tokenizer, the run's metadata and the export info,
    then tune the engine for this CPU (finsent.export.tuning; not without quantize or with tune=False).

    int8 is calibrated on sentences of `data_path`, by default the run's own training data (its training split)."""
    from finsent.models.exits import load_exits
    from finsent.models.loading import load_trained

    model_dir = Path(model_dir)
    info = read_model_info(model_dir)
    calibration = calibration_texts(model_dir, data_path, QUANTIZATION["calibration_sentences"]) if quantize else []
    out = Path(output_dir) if output_dir else model_dir / ONNX_DIR
    model, tokenizer = load_trained(model_dir, merge=True)
    exits = load_exits(model_dir)
    # read every sentence it needs before a file is written: a failure then leaves the folder as it was
    held = threshold_texts(model_dir, data_path) if exits is not None and quantize else []
    reference = copy.deepcopy(model)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        tmp = Path(tmp)
        names = export_fp32(model, tokenizer, tmp / "plain.onnx", info.max_length)
        fused = fuse(tmp / "plain.onnx", tmp / ONNX_FP32, model.config)
        diff = check_parity(reference, tokenizer, tmp / ONNX_FP32, names, info.max_length)
        if not diff <= PARITY_ATOL:
            raise FinsentError(
                f"{out}: the exported ONNX model differs from PyTorch by {diff:.3g} in the logits (> {PARITY_ATOL}); not written"
            )
        files = [ONNX_FP32]
        quantized: dict = {}
        ort_quantized: dict | None = None
        if quantize:
            feeds = [
                _encode(tokenizer, calibration[i : i + 32], names, info.max_length)
                for i in range(0, len(calibration), 32)
            ]
            quantized = build_int8(tmp / "plain.onnx", tmp / ONNX_INT8, feeds)
            ort_quantized = build_ort_int8(tmp / "plain.onnx", tmp / ONNX_ORT_INT8, model.config, feeds)
            files += [ONNX_INT8, ONNX_ORT_INT8]
        segments = None
        if exits is not None:
            segments = export_exit_segments(  # the parity check is done with reference: cut it into segments
                reference, exits, tokenizer, names, tmp, calibration, info.max_length, quantize
            )
            files += segments["files"]
        for name in files:
            (tmp / name).replace(out / name)
    tokenizer.save_pretrained(str(out))
    if segments and quantize:
        segments["int8_thresholds"] = int8_exit_thresholds(model_dir, out, held, tokenizer, names, info.max_length)
    for name in RUN_METADATA_FILES:
        if (model_dir / name).is_file() and model_dir.resolve() != out.resolve():
            shutil.copy2(model_dir / name, out / name)
    export = {
        "source": str(model_dir.resolve()),
        "version": info.version,
        "source_weights_sha256": weights_digest(model_dir),
        "exporter": EXPORTER,
        "opset": OPSET,
        "inputs": names,
        "files": files,
        "fused_nodes": fused,
        "fp32_max_abs_logit_diff": diff,
        "quantization": {**QUANTIZATION, **quantized, "calibration_sentences": len(calibration)} if quantize else None,
        "ort_quantization": ort_quantized,
        **({"early_exit_segments": segments} if segments else {}),
        "created_at": dt.datetime.now(dt.timezone.utc),
    }
    write_export_info(out, export)
    if tune and quantize:  # the fastest engine on this CPU that agrees with fp32 PyTorch becomes the default
        from finsent.export.tuning import tune_engine

        export["engine"] = tune_engine(model_dir, out, data_path=data_path)
    return {**export, "output_dir": str(out)}
