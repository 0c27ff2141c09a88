#!/usr/bin/env python
"""Candidate engines for the full model, side by side: fused nodes, label agreement with fp32 PyTorch, rough speed.

    python bench/onnx_candidates.py --model_dir runs/v1 --data_path ../shared/data/FinancialPhraseBank-v1.0.zip

Builds each candidate of CANDIDATES from the run folder into --work (default <model_dir>/candidates/): the dynamo
and TorchScript exports, ONNX Runtime's transformer optimizer (Attention or MultiHeadAttention fusion), dynamic and
static (QDQ, calibrated on PhraseBank sentences outside the agreement set) int8, with and without the outlier-channel
split, per-channel or per-tensor weights, OpenVINO's own runtime, and CTranslate2. Scores each on the PhraseBank
test split (AllAgree, seed 42) plus 2,000 other PhraseBank sentences against the fp32 PyTorch labels (>= 99.5 %
needed) and times it roughly (--n sentences, --threads threads; on a loaded machine only the order means anything:
bench/serving.py --candidates re-times them in separate processes). Writes bench/results/onnx_candidates.md/.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AGREEMENT_GOAL = 0.995
N_OTHER = 2000
N_CALIBRATION = 256
MODEL_FILE = "model.onnx"
DYNAMIC = {"mode": "dynamic", "per_channel": True, "reduce_range": False, "op_types": ["MatMul"]}
STATIC = {**DYNAMIC, "mode": "static", "activation_type": "QUInt8", "calibrate_method": "MinMax"}
NNCF = {"mode": "nncf", "model_type": "transformer", "preset": "mixed"}  # finsent.export.graphs.quantize_int8
# What each candidate is, as data: engine, exporter, fusion (None, "Attention", "MultiHeadAttention"), quantization.
CANDIDATES: dict[str, dict] = {
    "ort_dynamo_fp32": {"engine": "onnxruntime", "exporter": "dynamo", "fusion": None, "quantization": None},
    "ort_dynamo_int8_u8_split8": {
        "engine": "onnxruntime",
        "exporter": "dynamo",
        "fusion": None,
        "quantization": {**DYNAMIC, "weight_type": "QUInt8", "fp32_outlier_channels": 8},
    },
    "ort_fused_fp32": {"engine": "onnxruntime", "exporter": "torchscript", "fusion": "Attention", "quantization": None},
    "ort_fused_int8_s8": {
        "engine": "onnxruntime",
        "exporter": "torchscript",
        "fusion": "Attention",
        "quantization": {**DYNAMIC, "weight_type": "QInt8", "op_types": ["MatMul", "Attention"]},
    },
    "ort_fused_int8_u8": {
        "engine": "onnxruntime",
        "exporter": "torchscript",
        "fusion": "Attention",
        "quantization": {**DYNAMIC, "weight_type": "QUInt8", "op_types": ["MatMul", "Attention"]},
    },
    "ort_mha_int8_s8_split8": {
        "engine": "onnxruntime",
        "exporter": "torchscript",
        "fusion": "MultiHeadAttention",
        "quantization": {**DYNAMIC, "weight_type": "QInt8", "fp32_outlier_channels": 8},
    },
    "ort_mha_int8_u8_split8": {
        "engine": "onnxruntime",
        "exporter": "torchscript",
        "fusion": "MultiHeadAttention",
        "quantization": {**DYNAMIC, "weight_type": "QUInt8", "fp32_outlier_channels": 8},
    },
    "ort_mha_int8_s8_split8_per_tensor": {
        "engine": "onnxruntime",
        "exporter": "torchscript",
        "fusion": "MultiHeadAttention",
        "quantization": {**DYNAMIC, "weight_type": "QInt8", "per_channel": False, "fp32_outlier_channels": 8},
    },
    "ort_mha_int8_s8_split4": {
        "engine": "onnxruntime",
        "exporter": "torchscript",
        "fusion": "MultiHeadAttention",
        "quantization": {**DYNAMIC, "weight_type": "QInt8", "fp32_outlier_channels": 4},
    },
    "ort_mha_static_s8": {
        "engine": "onnxruntime",
        "exporter": "torchscript",
        "fusion": "MultiHeadAttention",
        "quantization": {**STATIC, "weight_type": "QInt8"},
    },
    "ort_mha_static_s8_split8": {
        "engine": "onnxruntime",
        "exporter": "torchscript",
        "fusion": "MultiHeadAttention",
        "quantization": {**STATIC, "weight_type": "QInt8", "fp32_outlier_channels": 8},
    },
    "openvino_auto_bf16": {"engine": "openvino", "exporter": "torchscript", "fusion": None, "quantization": None},
    "openvino_static_s8_split8": {
        "engine": "openvino",
        "exporter": "torchscript",
        "fusion": None,
        "quantization": {**STATIC, "weight_type": "QInt8", "activation_type": "QInt8", "fp32_outlier_channels": 8},
    },
    # NNCF post-training quantization into a QDQ graph (what `finsent export-onnx` writes, with the split of 8)
    "openvino_nncf_s8": {"engine": "openvino", "exporter": "torchscript", "fusion": None, "quantization": NNCF},
    "openvino_nncf_s8_split8": {
        "engine": "openvino",
        "exporter": "torchscript",
        "fusion": None,
        "quantization": {**NNCF, "fp32_outlier_channels": 8},
    },
    "openvino_nncf_s8_split32": {
        "engine": "openvino",
        "exporter": "torchscript",
        "fusion": None,
        "quantization": {**NNCF, "fp32_outlier_channels": 32},
    },
    "ort_nncf_s8_split8": {
        "engine": "onnxruntime",
        "exporter": "torchscript",
        "fusion": None,
        "quantization": {**NNCF, "fp32_outlier_channels": 8},
    },
    "ctranslate2_fp32": {"engine": "ctranslate2", "compute_type": "float32"},
    "ctranslate2_int8": {"engine": "ctranslate2", "compute_type": "int8"},
}


def agreement_texts(data_path: str, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """(test split of AllAgree at seed 42, N_OTHER other PhraseBank sentences, calibration sentences): disjoint."""
    from finsent.data.corpus import load_data
    from finsent.data.splits import split_data

    test = split_data(load_data(data_path, "all"), 42).test.texts
    seen = set(test)
    rest = [t for t in load_data(data_path, "50").texts if t not in seen]
    order = np.random.default_rng(seed).permutation(len(rest))
    return test, [rest[i] for i in order[:N_OTHER]], [rest[i] for i in order[N_OTHER : N_OTHER + N_CALIBRATION]]


class OpenVinoEngine:
    """An ONNX file compiled by OpenVINO for the CPU (its own runtime and int8 kernels for QDQ graphs)."""

    name = "openvino"

    def __init__(self, path: Path, threads: int):
        import openvino as ov

        from finsent.models.loading import load_tokenizer

        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = core.compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_names = [i.any_name for i in self.compiled.inputs]
        self.tokenizer = load_tokenizer(str(path.parent))
        self.num_labels = int(self.compiled.outputs[0].get_partial_shape()[-1].get_length())

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.request.infer({k: feeds[k] for k in self.input_names})[0].copy()


class CTranslate2Engine:
    """A converted BertModel on CTranslate2's encoder, the classification head applied in NumPy to the pooled output."""

    name = "ctranslate2"
    input_names = ["input_ids", "attention_mask", "token_type_ids"]

    def __init__(self, path: Path, threads: int, compute_type: str):
        import ctranslate2

        from finsent.models.loading import load_tokenizer

        self.encoder = ctranslate2.Encoder(str(path), device="cpu", compute_type=compute_type, intra_threads=threads)
        head = np.load(path / "classifier.npz")
        self.weight, self.bias = head["weight"], head["bias"]
        self.tokenizer = load_tokenizer(str(path))
        self.num_labels = len(self.bias)

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        lengths = feeds["attention_mask"].sum(1).astype(np.int32)
        out = self.encoder.forward_batch(
            [row[:n].tolist() for row, n in zip(feeds["input_ids"], lengths)],
            token_type_ids=[row[:n].tolist() for row, n in zip(feeds["token_type_ids"], lengths)],
        )
        return np.asarray(out.pooler_output) @ self.weight.T + self.bias


class _Batches:
    """onnxruntime's CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


def ort_quantize(src: Path, dst: Path, settings: dict, excluded: list[str], feeds: list[dict[str, np.ndarray]]) -> None:
    """onnxruntime int8 quantization (dynamic, or static QDQ with the calibration batches) leaving `excluded` fp32."""
    import logging

    from onnx import TensorProto
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns about pre-processing through the root logger
    common = {
        "weight_type": getattr(QuantType, settings["weight_type"]),
        "per_channel": settings["per_channel"],
        "reduce_range": settings["reduce_range"],
        "op_types_to_quantize": list(settings["op_types"]),
        "nodes_to_exclude": list(excluded),
        # shape inference stops at the contrib ops (Attention, SkipLayerNormalization): their outputs are fp32
        "extra_options": {"DefaultTensorType": TensorProto.FLOAT},
    }
    if settings["mode"] == "static":
        quantize_static(
            src,
            dst,
            _Batches(list(feeds)),
            quant_format=QuantFormat.QDQ,
            activation_type=getattr(QuantType, settings.get("activation_type", "QUInt8")),
            calibrate_method=getattr(CalibrationMethod, settings.get("calibrate_method", "MinMax")),
            **common,
        )
    else:
        quantize_dynamic(src, dst, **common)


def build(name: str, spec: dict, model_dir: Path, work: Path, calibration: list[str]) -> dict:
    """Write one candidate into work/name/ (model file + tokenizer); returns what was built and its fused nodes."""
    from finsent.export import graphs as exporter
    from finsent.models.loading import load_trained
    from finsent.runs.folder import read_model_info

    out = work / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    info = read_model_info(model_dir)
    model, tokenizer = load_trained(model_dir, merge=True)
    tokenizer.save_pretrained(str(out))
    if spec["engine"] == "ctranslate2":
        import ctranslate2

        hf = out / "hf"
        model.bert.save_pretrained(hf)
        tokenizer.save_pretrained(str(hf))
        ctranslate2.converters.TransformersConverter(str(hf)).convert(str(out / "ct2"), quantization=None)
        for f in (out / "ct2").iterdir():
            f.replace(out / f.name)
        shutil.rmtree(hf)
        (out / "ct2").rmdir()
        head = model.classifier
        np.savez(out / "classifier.npz", weight=head.weight.detach().numpy(), bias=head.bias.detach().numpy())
        return {"file": str(out), "fused_nodes": {}}
    plain = out / "plain.onnx"
    names = exporter.export_fp32(model, tokenizer, plain, info.max_length, spec["exporter"])
    source = plain
    built: dict = {"fused_nodes": {}}
    if spec["fusion"]:
        source = out / "fused.onnx"
        built["fused_nodes"] = exporter.fuse(plain, source, model.config, spec["fusion"])
    q = spec["quantization"]
    if q:
        feeds = [
            exporter._encode(tokenizer, calibration[i : i + 32], names, info.max_length)
            for i in range(0, len(calibration), 32)
        ]
        excluded: list[str] = []
        k = q.get("fp32_outlier_channels") or 0
        if k:
            split = out / "split.onnx"
            excluded = exporter.split_outlier_channels(source, split, exporter.channel_absmax(source, feeds), k)
            source = split
        if q["mode"] == "nncf":
            exporter.quantize_int8(source, out / "int8.onnx", feeds, excluded, {**exporter.QUANTIZATION, **q})
        else:
            ort_quantize(source, out / "int8.onnx", q, excluded, feeds)
        source = out / "int8.onnx"
        built["fp32_nodes"] = len(excluded)
    source.replace(out / MODEL_FILE)
    for tmp in ("plain.onnx", "fused.onnx", "split.onnx"):
        (out / tmp).unlink(missing_ok=True)
    built["file"] = str(out / MODEL_FILE)
    built["size_mb"] = (out / MODEL_FILE).stat().st_size / 1e6
    return built


def candidate_path(name: str, work: Path) -> Path:
    """Where build() put a candidate: its ONNX file, or the CTranslate2 model folder."""
    spec = CANDIDATES[name]
    path = work / name if spec["engine"] == "ctranslate2" else work / name / MODEL_FILE
    if not path.exists():
        raise SystemExit(f"{path}: candidate {name} not built; run bench/onnx_candidates.py --candidates {name} first")
    return path


def engine(spec: dict, path: Path, threads: int):
    """The backend object a Predictor runs for a built candidate."""
    from finsent.inference.backends import OnnxBackend

    if spec["engine"] == "openvino" and (spec.get("quantization") or {}).get("mode") == "nncf":
        return OnnxBackend(path, threads, "openvino")  # finsent's own: fp32 outside the int8 products
    if spec["engine"] == "openvino":
        return OpenVinoEngine(path, threads)  # OpenVINO's CPU defaults (bf16 where the CPU has it)
    if spec["engine"] == "ctranslate2":
        return CTranslate2Engine(path, threads, spec["compute_type"])
    return OnnxBackend(path, threads, "onnxruntime")


def predictor(model_dir: Path, name: str, work: Path, threads: int, batch_size: int = 32):
    """finsent's Predictor (tokenization, length-sorted batches, temperature) on a built candidate."""
    from finsent.inference.predictor import Predictor

    return Predictor(model_dir, engine(CANDIDATES[name], candidate_path(name, work), threads), batch_size=batch_size)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model_dir", default="runs/v1")
    ap.add_argument("--data_path", default=str(ROOT.parent / "shared" / "data" / "FinancialPhraseBank-v1.0.zip"))
    ap.add_argument("--work", default=None, help="where candidates are built (default: <model_dir>/candidates)")
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--n", type=int, default=1000, help="sentences timed per candidate (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max_other", type=int, default=N_OTHER, help="other PhraseBank sentences scored (default: 2000)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "onnx_candidates"))
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from transformers.utils import logging as hf_logging

    from finsent.core.serialization import write_json, write_text
    from finsent.inference.predictor import Predictor

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    model_dir = Path(args.model_dir)
    work = Path(args.work) if args.work else model_dir / "candidates"
    test, other, calibration = agreement_texts(args.data_path)
    texts = test + other[: args.max_other]
    reference = Predictor(model_dir, "torch", num_threads=args.threads)
    ref = reference.score(texts).probs.argmax(1)
    timed = (texts * (-(-args.n // len(texts))))[: args.n]
    rows = []
    for name in args.candidates:
        spec = CANDIDATES[name]
        t0 = time.perf_counter()
        built = build(name, spec, model_dir, work, calibration)
        build_s = time.perf_counter() - t0
        p = predictor(model_dir, name, work, args.threads)
        got = p.score(texts).probs.argmax(1)
        p.score(timed[:64])
        t0 = time.perf_counter()
        p.score(timed)
        seconds = time.perf_counter() - t0
        row = {
            "candidate": name,
            **spec,
            **built,
            "agreement_test": float((got[: len(test)] == ref[: len(test)]).mean()),
            "agreement": float((got == ref).mean()),
            "disagreements": int((got != ref).sum()),
            "n_scored": len(texts),
            "sentences_per_s_rough": args.n / seconds,
            "build_s": build_s,
            "loadavg": list(os.getloadavg()),
        }
        rows.append(row)
        print(
            f"{name}: agreement {row['agreement']:.2%} ({row['disagreements']} of {len(texts)}), fused {row['fused_nodes']}, "
            f"~{row['sentences_per_s_rough']:.0f} sentences/s (load {row['loadavg'][0]:.1f})",
            file=sys.stderr,
        )
        write_json(Path(args.out + ".json"), {"model_dir": str(model_dir), "threads": args.threads, "rows": rows})
        write_text(Path(args.out + ".md"), markdown(rows, args))  # after each candidate: a long run keeps its rows
    return 0


def markdown(rows: list[dict], args) -> str:
    lines = [
        "# Full-model candidates (bench/onnx_candidates.py)",
        "",
        f"Command: `python bench/onnx_candidates.py {' '.join(sys.argv[1:])}`  ",
        f"Agreement: labels equal to fp32 PyTorch on the AllAgree test split (seed 42) plus {args.max_other} other "
        f"PhraseBank sentences; goal >= {AGREEMENT_GOAL:.1%}. Speed: {args.n} sentences, {args.threads} threads, one "
        "process, rough (re-time with bench/serving.py --candidates on an idle machine).",
        "",
        "| candidate | engine | fused nodes | fp32 outlier products | agreement (test split) | agreement (all) | "
        "sentences/s (rough) | load avg | file MB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        fused = ", ".join(f"{k} {v}" for k, v in r["fused_nodes"].items()) or "-"
        lines.append(
            f"| {r['candidate']} | {r['engine']} | {fused} | {r.get('fp32_nodes', '-')} | {r['agreement_test']:.2%} | "
            f"{r['agreement']:.2%} | {r['sentences_per_s_rough']:.0f} | {r['loadavg'][0]:.1f} | {r.get('size_mb', 0):.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
