"""The early-exit segments of a run with exits: each exported to ONNX, checked against PyTorch and quantized like the
whole model, and the exit thresholds chosen again on the int8 segments."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np

from finsent.core.errors import FinsentError
from finsent.data.entities import ENTITY
from finsent.export.graphs import (
    CHECK_TEXTS,
    OPSET,
    PARITY_ATOL,
    _encode,
    _session,
    build_int8,
    training_data,
    training_inputs,
)


def _export_module(module, args: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict) -> None:
    """torch.onnx.export (TorchScript, OPSET) of one module, errors as one line."""
    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=axes,
                dynamo=False,
                opset_version=OPSET,
            )
    except Exception as e:  # noqa: BLE001 - torch.onnx raises many kinds; the user needs one line
        raise FinsentError(
            f"ONNX export of {path.name} failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None


def export_exit_segments(
    model, exits, tokenizer, names: list[str], tmp: Path, calibration: list[str], max_length: int, quantize: bool
) -> dict:
    """The model cut at its early exits (finsent.models.exits.segments), each segment exported to ONNX, checked against
    PyTorch and quantized like the whole model (calibrated on the hidden states the previous segments produce)."""
    import torch

    from finsent.models.exits import segment_files, segments

    parts = segments(model, exits)
    texts = calibration or CHECK_TEXTS
    batches = [_encode(tokenizer, texts[i : i + 32], names, max_length) for i in range(0, len(texts), 32)]
    fp32_files = segment_files(len(exits.layers), int8=False)
    int8_files = segment_files(len(exits.layers), int8=True)
    worst = 0.0
    feeds = batches
    for i, (module, fp32) in enumerate(zip(parts, fp32_files)):
        last = i == len(parts) - 1
        inputs = names if i == 0 else ["hidden_states", "attention_mask"]
        outputs = ["logits"] if last else ["logits", "hidden_states_out"]
        axes = {n: {0: "batch", 1: "sequence"} for n in inputs}
        axes.update({"logits": {0: "batch"}, **({} if last else {"hidden_states_out": {0: "batch", 1: "sequence"}})})
        sample = tuple(torch.from_numpy(feeds[0][n]) for n in inputs)
        _export_module(module, sample, tmp / fp32, inputs, outputs, axes)
        session = _session(tmp / fp32)
        following = []
        for batch in feeds:
            with torch.inference_mode():
                ref = [t.numpy() for t in module(**{k: torch.from_numpy(v) for k, v in batch.items()})]
            got = session.run(None, batch)
            worst = max(worst, *(float(np.abs(a - b).max()) for a, b in zip(got, ref)))
            if not last:
                following.append({"hidden_states": ref[1], "attention_mask": batch["attention_mask"]})
        if quantize:
            build_int8(tmp / fp32, tmp / int8_files[i], feeds)
        feeds = following
    if not worst <= PARITY_ATOL:
        raise FinsentError(
            f"the exported early-exit segments differ from PyTorch by {worst:.3g} in their outputs (> {PARITY_ATOL}); not written"
        )
    return {
        "layers": exits.layers,
        "files": fp32_files + (int8_files if quantize else []),
        "fp32_max_abs_diff": worst,
    }


def threshold_texts(model_dir: Path, data_path: str | Path | None) -> list[str]:
    """The sentences `finsent distill` chose the exit thresholds on (validation + held-out), found by their hashes
    in the run's PhraseBank data (a user's --unlabeled file is not re-read: its sentences are left out)."""
    from finsent.core.text import sentence_hash
    from finsent.data.corpus import load_data
    from finsent.runs.folder import read_model_info, read_sentences

    path, source = training_data(model_dir, data_path)
    seen = read_sentences(model_dir) or {}
    wanted = list(seen.get("val") or ()) + list(seen.get("threshold") or ())
    if read_model_info(model_dir).task == ENTITY:  # validation's (text, entity) pairs; an entity run has no others
        texts, inputs = training_inputs(model_dir, path, source)
        keep = set(wanted)
        return [x for t, x in zip(texts, inputs) if sentence_hash(t) in keep]
    given = load_data(path, source.get("agreement") or "all")  # --data_path where given, else the recorded data
    pool = list(given.texts)
    for part in given.source.get("sources", [given.source]):  # a run on several sources lists each
        if part.get("format") == "phrasebank":
            pool += load_data(part["path"], "50").texts  # every PhraseBank sentence: the held-out unlabeled ones too
    by_hash = {sentence_hash(t): t for t in pool}
    return [by_hash[h] for h in wanted if h in by_hash]


def int8_exit_thresholds(
    model_dir: Path, out: Path, texts: list[str], tokenizer, names: list[str], max_length: int
) -> dict | None:
    """The exit thresholds chosen again on the int8 segments (OpenVINO), on the sentences `finsent distill` chose the
    PyTorch ones on; None where those sentences cannot be found (the runtime then keeps the PyTorch thresholds)."""
    from finsent.core.metrics import softmax
    from finsent.inference.backends import OnnxBackend
    from finsent.inference.early_exit import all_logits, choose_thresholds
    from finsent.models.exits import read_spec, segment_files

    spec = read_spec(model_dir)
    if not texts:
        return None
    engines = [OnnxBackend(out / f, None, "openvino") for f in segment_files(len(spec["layers"]), int8=True)]
    batches = [_encode(tokenizer, texts[i : i + 32], names, max_length) for i in range(0, len(texts), 32)]
    *exits, final = all_logits([e.outputs for e in engines], batches)
    target = spec["agreement_target"]
    return {
        "thresholds": choose_thresholds([softmax(e) for e in exits], final.argmax(1), target),
        "runtime": "openvino",
        "sentences": len(texts),
        "agreement_target": target,
    }
