"""The steps of the ONNX export: export fp32, fuse it with ONNX Runtime's transformer optimizer, check it against
PyTorch, quantize it to QDQ int8 with NNCF on sentences of the run's training data (finsent.export.onnx runs them)."""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from finsent.core.errors import FinsentError

# The TorchScript exporter (opset 17): ONNX Runtime's BERT fusions match its graphs (with eager attention) whole,
# while the dynamo exporter's graph of the same model fuses no Attention and no EmbedLayerNormalization.
EXPORTER = "torchscript"
OPSET = 17
DYNAMO_OPSET = 18
# The fused ops the optimizer should produce for a BERT encoder; export.json counts them.
FUSED_OPS = (
    "EmbedLayerNormalization",
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
)
# int8 quantization, as data: NNCF's post-training quantization of the plain fp32 export into a QDQ ONNX graph
# (QuantizeLinear/DequantizeLinear around each product; static activation ranges from calibration sentences, int8
# weights per output channel), which OpenVINO's CPU runtime compiles into int8 kernels (VNNI where the CPU has it);
# onnxruntime runs the same file too, at about half the speed. BERT-family encoders carry a few input channels with
# activations 10-15x larger than the rest (all-MiniLM-L6-v2: channel 99 of the LayerNorm outputs reaches ~28, the
# median channel ~2), and a per-tensor int8 activation scale then rounds everything else coarsely: the
# `fp32_outlier_channels` largest channels of each linear layer's input (by |activation| on the calibration
# sentences) are taken out of its int8 product and added back by a small fp32 product (exact in fp32).
# `calibration_sentences` come from the run's own training split (export-onnx --data_path otherwise): with 20
# synthetic sentences the int8 model agreed with fp32 on only 99.15 %.
# Chosen by bench/onnx_candidates.py (bench/results/onnx_candidates.md, the AllAgree seed-0 student): on the PhraseBank
# test split + 2,000 other sentences, 32 channels agree with fp32 PyTorch on 99.96 % at 1.7x the speed of
# onnxruntime's dynamic int8 (the previous default); 8 channels on 99.87 % at 1.8x, but on the student with exits
# (bench/results/early_exit.md) 8 channels agreed on only 99.27 % of the test split + 600 unseen sentences and 32 on
# 99.52 %: the bar must hold for every run, so 32; without the split 99.55 % at 2.2x.
QUANTIZATION = {
    "method": "nncf.quantize",
    "format": "QDQ",
    "model_type": "transformer",
    "preset": "mixed",
    "fp32_outlier_channels": 32,
    "calibration_sentences": 256,
}
# onnxruntime's int8: dynamic quantization (int8 weights per channel, activations quantized per batch at run time) of
# the graph fused with MultiHeadAttention, the 8 largest input channels of each product kept in fp32 (as above). On a
# CPU whose onnxruntime int8 GEMM outruns OpenVINO's (Intel with AMX-INT8: 1,076 against 442 G multiply-adds/s) it can
# be the fastest engine; bench/onnx_candidates.py's ort_mha_int8_s8_split8 (99.78 % agreement there).
ORT_QUANTIZATION = {
    "method": "onnxruntime.quantize_dynamic",
    "fusion": "MultiHeadAttention",
    "weight_type": "QInt8",
    "per_channel": True,
    "fp32_outlier_channels": 8,
}
PARITY_ATOL = 1e-3
# Synthetic sentences of varied length for the fp32 parity check (not from any data set).
CHECK_TEXTS = [
    "Profit rose.",
    "The company reported a net loss for the third quarter.",
    "Shares were unchanged in early trading on the exchange .",
    "Net sales decreased by 12 percent to EUR 40.2 million , compared with EUR 45.7 million a year earlier .",
    "The board proposes a dividend of 0.50 per share , and the annual general meeting will be held in April in the capital .",
    "x",
    "Operating profit in the period was up , and the outlook for the full year remains positive despite weaker demand in some markets .",
    "The agreement covers deliveries over three years .",
]


def _logits_module(model):
    """Wrap a sequence classifier so the exported graph has named inputs and one `logits` output."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            return self.model(**kwargs).logits

    return Logits().eval()


def _encode(tokenizer, texts: list[str], input_names: list[str], max_length: int) -> dict[str, np.ndarray]:
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="np")
    return {
        k: enc[k].astype(np.int64) if k in enc else np.zeros_like(enc["input_ids"], dtype=np.int64) for k in input_names
    }


def export_fp32(model, tokenizer, path: Path, max_length: int, exporter: str = EXPORTER) -> list[str]:
    """torch.onnx.export with dynamic batch and sequence axes (TorchScript or dynamo exporter); returns the input names."""
    import torch

    names = [
        n
        for n in ("input_ids", "attention_mask", "token_type_ids")
        if n in tokenizer.model_input_names or n == "attention_mask"
    ]
    sample = _encode(tokenizer, ["an example sentence for export", "two words"], names, max_length)
    args = tuple(torch.from_numpy(sample[n]) for n in names)
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=4096)
        seq = torch.export.Dim("sequence", min=1, max=int(getattr(model.config, "max_position_embeddings", 512)))
        kwargs = {"dynamo": True, "opset_version": DYNAMO_OPSET, "external_data": False}
        kwargs["dynamic_shapes"] = {n: {0: batch, 1: seq} for n in names}
    else:
        model.set_attn_implementation("eager")  # the attention pattern the optimizer fuses (SDPA exports unfusable)
        kwargs = {"dynamo": False, "opset_version": OPSET}
        kwargs["dynamic_axes"] = {n: {0: "batch", 1: "sequence"} for n in names}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed" notes
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings and the TorchScript exporter's deprecation note
            torch.onnx.export(
                _logits_module(model), args, str(path), input_names=names, output_names=["logits"], **kwargs
            )
    except Exception as e:  # noqa: BLE001 - torch.onnx raises many kinds; the user needs one line
        raise FinsentError(
            f"ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "check that onnx and onnxscript are installed (pip install finsent)"
        ) from None
    return names


def fused_nodes(path: Path) -> dict[str, int]:
    """How many nodes of each fused transformer op (FUSED_OPS) a graph holds."""
    import onnx

    counts = collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
    return {op: counts[op] for op in FUSED_OPS if counts[op]}


def fuse(src: Path, dst: Path, config, attention: str = "Attention") -> dict[str, int]:
    """ONNX Runtime's transformer optimizer (model_type bert, heads and width from the config); returns fused_nodes."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.use_multi_head_attention = attention == "MultiHeadAttention"
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        model = optimize_model(
            str(src),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            optimization_options=options,
            opt_level=0,
        )
    model.save_model_to_file(str(dst))
    return fused_nodes(dst)


def _session(path: Path, extra_outputs: list[str] = ()):
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 0
    if not extra_outputs:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    model = onnx.load(str(path))
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in extra_outputs
    )
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _weight_matmuls(graph) -> list:
    """MatMul nodes whose second input is a 2-D weight initializer (the linear layers of the encoder)."""
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    return [n for n in graph.node if n.op_type == "MatMul" and len(shapes.get(n.input[1], [])) == 2]


def channel_absmax(path: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Largest |activation| per input channel of every weight MatMul's input, over the calibration batches."""
    import onnx

    inputs = sorted({n.input[0] for n in _weight_matmuls(onnx.load(str(path), load_external_data=False).graph)})
    session = _session(path, inputs)
    absmax: dict[str, np.ndarray] = {}
    for batch in feeds:
        for name, value in zip(inputs, session.run(inputs, batch)):
            x = np.abs(value).reshape(-1, value.shape[-1]).max(0)
            absmax[name] = np.maximum(absmax[name], x) if name in absmax else x
    return absmax


def split_outlier_channels(src: Path, dst: Path, absmax: dict[str, np.ndarray], k: int) -> list[str]:
    """Rewrite each weight MatMul as int8-friendly part + fp32 product over its input's k largest channels.

    x @ W = (x * keep) @ W_main + x[..., channels] @ W[channels]: exact in fp32; only the first product is quantized,
    and its input no longer holds the outlier channels that would set the per-tensor int8 scale. Returns the names of
    the small fp32 products (to exclude from quantization).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    new_inits, excluded, split_inputs = [], [], {}
    nodes = []
    linear = {n.name for n in _weight_matmuls(graph)}
    for node in graph.node:
        if node.name not in linear or node.input[0] not in absmax or len(absmax[node.input[0]]) <= k:
            nodes.append(node)
            continue
        x, w_name = node.input[0], node.input[1]
        if x not in split_inputs:  # Q, K and V share one input: mask and gather it once
            channels = np.sort(np.argsort(absmax[x])[-k:]).astype(np.int64)
            keep = np.ones(len(absmax[x]), dtype=np.float32)
            keep[channels] = 0
            tag = f"outlier_split_{len(split_inputs)}"
            new_inits += [
                numpy_helper.from_array(keep, f"{tag}_keep"),
                numpy_helper.from_array(channels, f"{tag}_channels"),
            ]
            nodes += [
                helper.make_node("Mul", [x, f"{tag}_keep"], [f"{tag}_main_in"], name=f"{tag}_mask"),
                helper.make_node(
                    "Gather", [x, f"{tag}_channels"], [f"{tag}_outlier_in"], name=f"{tag}_gather", axis=-1
                ),
            ]
            split_inputs[x] = (tag, channels, keep)
        tag, channels, keep = split_inputs[x]
        w = numpy_helper.to_array(weights[w_name])
        new_inits += [
            numpy_helper.from_array(w * keep[:, None], f"{w_name}_main"),
            numpy_helper.from_array(w[channels], f"{w_name}_outliers"),
        ]
        out = node.output[0]
        nodes += [
            helper.make_node("MatMul", [f"{tag}_main_in", f"{w_name}_main"], [f"{out}_main"], name=f"{node.name}_main"),
            helper.make_node(
                "MatMul", [f"{tag}_outlier_in", f"{w_name}_outliers"], [f"{out}_outliers"], name=f"{node.name}_outliers"
            ),
            helper.make_node("Add", [f"{out}_main", f"{out}_outliers"], [out], name=f"{node.name}_sum"),
        ]
        excluded.append(f"{node.name}_outliers")
    graph.ClearField("node")
    graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    kept = [init for init in graph.initializer if init.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(kept + new_inits)
    onnx.save(model, str(dst))
    return excluded


def check_parity(model, tokenizer, path: Path, names: list[str], max_length: int) -> float:
    """Max |logit difference| of the ONNX model vs PyTorch over batches of several sizes and lengths."""
    import torch

    session = _session(path)
    worst = 0.0
    for batch in (CHECK_TEXTS, CHECK_TEXTS[:1], CHECK_TEXTS[2:5], CHECK_TEXTS[5:6] + CHECK_TEXTS[3:4]):
        feeds = _encode(tokenizer, batch, names, max_length)
        onnx_logits = session.run(None, feeds)[0]
        with torch.inference_mode():
            ref = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
        worst = max(worst, float(np.abs(onnx_logits - ref).max()))
    return worst


def import_nncf():
    """nncf with its usage telemetry off: unless told otherwise it reports each quantize call to Google Analytics, and
    finsent makes no network calls at run time (users sit behind firewalls). NNCF_CI is the switch nncf reads."""
    os.environ.setdefault("NNCF_CI", "1")
    import nncf

    return nncf


def quantize_int8(
    src: Path,
    dst: Path,
    feeds: list[dict[str, np.ndarray]],
    excluded: list[str] = (),
    settings: dict = QUANTIZATION,
) -> None:
    """NNCF post-training int8 quantization of an ONNX graph into QDQ ONNX, leaving the `excluded` nodes in fp32."""
    import onnx

    nncf = import_nncf()
    nncf.set_log_level(logging.ERROR)
    kwargs = {"ignored_scope": nncf.IgnoredScope(names=list(excluded))} if excluded else {}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # progress bars
        model = nncf.quantize(
            onnx.load(str(src)),
            nncf.Dataset(list(feeds)),
            preset=nncf.QuantizationPreset(settings["preset"]),
            model_type=nncf.ModelType(settings["model_type"]),
            subset_size=len(feeds),
            **kwargs,
        )
    onnx.save(model, str(dst))


def build_int8(plain_path: Path, dst: Path, feeds: list[dict[str, np.ndarray]], settings: dict = QUANTIZATION) -> dict:
    """Split the outlier channels of the plain fp32 export and quantize it; returns what export.json records."""
    k = settings.get("fp32_outlier_channels") or 0
    excluded: list[str] = []
    source = plain_path
    if k:
        source = dst.parent / f"{dst.stem}.split.onnx"
        excluded = split_outlier_channels(plain_path, source, channel_absmax(plain_path, feeds), k)
    quantize_int8(source, dst, feeds, excluded, settings)
    if source != plain_path:
        source.unlink()
    return {"fp32_nodes": len(excluded), "int8_nodes": int8_nodes(dst)}


def build_ort_int8(
    plain_path: Path, dst: Path, config, feeds: list[dict[str, np.ndarray]], settings: dict = ORT_QUANTIZATION
) -> dict:
    """onnxruntime's dynamic int8 of the plain fp32 export, fused with MultiHeadAttention, outlier channels in fp32."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fused = dst.parent / f"{dst.stem}.fused.onnx"
    split = dst.parent / f"{dst.stem}.split.onnx"
    fuse(plain_path, fused, config, settings["fusion"])
    excluded = split_outlier_channels(fused, split, channel_absmax(fused, feeds), settings["fp32_outlier_channels"])
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer warns about pre-processing through the root logger
    try:
        quantize_dynamic(
            split,
            dst,
            weight_type=getattr(QuantType, settings["weight_type"]),
            per_channel=settings["per_channel"],
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=excluded,
            # shape inference stops at the contrib ops (MultiHeadAttention, SkipLayerNormalization): outputs are fp32
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)
    fused.unlink()
    split.unlink()
    return {**settings, "fp32_nodes": len(excluded)}


def int8_nodes(path: Path) -> int:
    """How many products of a QDQ graph take int8 inputs (MatMul/Gemm fed by DequantizeLinear)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return sum(n.op_type in ("MatMul", "Gemm") and n.input[0] in dequantized for n in graph.node)


def training_data(model_dir: Path, data_path: str | Path | None) -> tuple[str | list[str], dict]:
    """The run's training data to read sentences from: --data_path, else the path in results.json (checked to be
    there), and results.json's record of it."""
    from finsent.runs.folder import RESULTS, read_results

    source = read_results(model_dir, check=False).get("data") or {} if (model_dir / RESULTS).is_file() else {}
    path = data_path or source.get("path")
    if not path:
        raise FinsentError(
            f"{model_dir}: results.json names no training data to calibrate int8 on; pass --data_path (the training data) or --no_quantize"
        )
    paths = [str(p) for p in path] if isinstance(path, list) else [str(path)]  # a run on several sources lists each
    missing = [p for p in paths if not Path(p).exists()]
    if not data_path and missing:
        raise FinsentError(
            f"{model_dir}/results.json: the training data {missing[0]} is not there to calibrate int8 on; pass --data_path or --no_quantize"
        )
    return (paths[0] if len(paths) == 1 else paths), source


def training_inputs(model_dir: Path, path, source: dict) -> tuple[list[str], list[str]]:
    """A run's training data as (texts, model inputs): the same for a sentence run; each (text, entity) pair in the
    run's entity format for an entity run (sentences.json hashes the texts)."""
    from finsent.data.corpus import load_data, load_entity_data
    from finsent.data.entities import ENTITY, EntityFormat
    from finsent.runs.folder import read_model_info

    info = read_model_info(model_dir)
    if info.task == ENTITY:
        data = load_entity_data(path)
        return data.texts, data.inputs(EntityFormat.from_json(info.entity_input))
    texts = load_data(path, source.get("agreement") or "all").texts
    return texts, texts


def calibration_texts(model_dir: Path, data_path: str | Path | None, n: int) -> list[str]:
    """n sentences to calibrate int8 on: from the run's training split where the data says which, in a fixed order."""
    from finsent.core.text import sentence_hash
    from finsent.runs.folder import read_sentences

    path, source = training_data(model_dir, data_path)
    texts, inputs = training_inputs(model_dir, path, source)
    train = set((read_sentences(model_dir) or {}).get("train") or ())
    in_train = [x for t, x in zip(texts, inputs) if sentence_hash(t) in train]
    pool = sorted(in_train if len(in_train) >= min(n, len(inputs)) else inputs, key=sentence_hash)  # a fixed shuffle
    return pool[:n]
