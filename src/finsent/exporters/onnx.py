"""Merge the LoRA adapter, export ONNX with dynamic batch/sequence axes, check it, quantize it to int8."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np

from finsent.errors import FinsentError
from finsent.inference import weights_digest
from finsent.runs import ONNX_DIR, ONNX_FP32, ONNX_INT8, RUN_METADATA_FILES, read_model_info, write_export_info

OPSET = 18
# onnxruntime dynamic quantization, as data: int8 weights per output channel, uint8 activations quantized per
# tensor at run time. Weights are uint8 (U8U8 kernels): on x86 CPUs without VNNI the U8S8 kernels can saturate, and
# here they doubled the logit error. Embedding tables (Gather) stay fp32: quantizing them saves memory, not time.
# The classifier (3 outputs) stays fp32. BERT-family encoders carry a few input channels with activations 10-15x
# larger than the rest (all-MiniLM-L6-v2: channel 99 of the LayerNorm outputs reaches ~28, the median channel ~2),
# and per-tensor int8 then rounds everything else coarsely. The `fp32_outlier_channels` largest channels (by
# |activation| on calibration sentences) are taken out of each linear layer's int8 product and added back by a small
# fp32 product (exact in fp32). With uint8 weights this cut the mean |logit diff| to fp32 from ~0.07 to ~0.02.
QUANTIZATION = {
    "weight_type": "QUInt8",
    "per_channel": True,
    "reduce_range": False,
    "op_types": ["MatMul", "Gemm"],
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
# Synthetic calibration sentences (not from any data set): only which channels run large is taken from them.
CALIBRATION_TEXTS = CHECK_TEXTS + [
    "Revenue for the full year is expected to grow slightly .",
    "The bank cut its forecast and shares dropped 8 % in Helsinki .",
    "The contract is worth about USD 25 million .",
    "Earnings per share were EUR 0.21 , up from EUR 0.15 .",
    "The group will close two plants and lay off 450 employees by the end of the year .",
    "Demand for paper products weakened in Europe , while Asian markets held up well .",
    "The acquisition is subject to approval by the competition authorities .",
    "Cash flow from operations improved to EUR 31 mn .",
    "The company did not disclose the terms of the deal .",
    "Order intake fell 20 % to EUR 150 mn in the second quarter , and the backlog shrank .",
    "The new factory is scheduled to start production next spring .",
    "Analysts had expected a smaller loss .",
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


def split_outlier_channels(model, tokenizer, k: int, max_length: int) -> int:
    """Rewrite each encoder/pooler Linear as int8-friendly part + fp32 product over its k largest input channels (exact in fp32)."""
    import torch

    linears = {
        name: mod
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and "classifier" not in name and mod.in_features > k
    }
    absmax: dict[str, torch.Tensor] = {}

    def record(name):
        def hook(mod, args):
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0)
            absmax[name] = torch.maximum(absmax[name], x) if name in absmax else x

        return hook

    handles = [mod.register_forward_pre_hook(record(name)) for name, mod in linears.items()]
    with torch.inference_mode():
        model(**tokenizer(CALIBRATION_TEXTS, truncation=True, max_length=max_length, padding=True, return_tensors="pt"))
    for h in handles:
        h.remove()

    class OutlierSplitLinear(torch.nn.Module):
        def __init__(self, linear: torch.nn.Linear, channels: torch.Tensor):
            super().__init__()
            keep = torch.ones(linear.in_features)
            keep[channels] = 0
            self.register_buffer("keep", keep)
            self.register_buffer("channels", channels)
            self.main = torch.nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
            self.fp32_outliers = torch.nn.Linear(len(channels), linear.out_features, bias=False)
            with torch.no_grad():
                self.main.weight.copy_(linear.weight * keep)
                if linear.bias is not None:
                    self.main.bias.copy_(linear.bias)
                self.fp32_outliers.weight.copy_(linear.weight[:, channels])

        def forward(self, x):
            return self.main(x * self.keep) + self.fp32_outliers(x.index_select(-1, self.channels))

    for name, linear in linears.items():
        parent, _, child = name.rpartition(".")
        channels = absmax[name].topk(k).indices.sort().values
        setattr(model.get_submodule(parent), child, OutlierSplitLinear(linear, channels))
    return len(linears)


def fp32_nodes(path: Path, k: int) -> list[str]:
    """Nodes int8 must leave alone: the k-channel outlier products and the classifier (the node giving `logits`)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    outputs = {o.name for o in graph.output}
    keep = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        weight = next((shapes[i] for i in node.input[1:2] if i in shapes), None)
        if (weight is not None and k in weight and len(weight) == 2 and min(weight) == k) or outputs & set(node.output):
            keep.append(node.name)
    return keep


def _encode(tokenizer, texts: list[str], input_names: list[str], max_length: int) -> dict[str, np.ndarray]:
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="np")
    return {
        k: enc[k].astype(np.int64) if k in enc else np.zeros_like(enc["input_ids"], dtype=np.int64) for k in input_names
    }


def export_fp32(model, tokenizer, path: Path, max_length: int) -> list[str]:
    """torch.onnx.export (the dynamo exporter) with dynamic batch and sequence axes; returns the input names."""
    import torch

    names = [
        n
        for n in ("input_ids", "attention_mask", "token_type_ids")
        if n in tokenizer.model_input_names or n == "attention_mask"
    ]
    sample = _encode(tokenizer, ["an example sentence for export", "two words"], names, max_length)
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("sequence", min=1, max=int(getattr(model.config, "max_position_embeddings", 512)))
    args = tuple(torch.from_numpy(sample[n]) for n in names)
    import logging

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed" notes
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(
                _logits_module(model),
                args,
                str(path),
                dynamo=True,
                opset_version=OPSET,
                external_data=False,
                input_names=names,
                output_names=["logits"],
                dynamic_shapes={n: {0: batch, 1: seq} for n in names},
            )
    except Exception as e:  # noqa: BLE001 - torch.export raises many kinds; the user needs one line
        raise FinsentError(
            f"ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "check that onnx and onnxscript are installed (pip install finsent)"
        ) from None
    return names


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 0
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


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


def quantize_int8(src: Path, dst: Path, settings: dict = QUANTIZATION) -> list[str]:
    """onnxruntime dynamic quantization to int8 with the settings above; returns the nodes left in fp32."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = fp32_nodes(src, settings["fp32_outlier_channels"]) if settings.get("fp32_outlier_channels") else []
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic warns about pre-processing through the root logger
    try:
        quantize_dynamic(
            src,
            dst,
            weight_type=getattr(QuantType, settings["weight_type"]),
            per_channel=settings["per_channel"],
            reduce_range=settings["reduce_range"],
            op_types_to_quantize=list(settings["op_types"]),
            nodes_to_exclude=excluded,
        )
    finally:
        root.setLevel(level)
    return excluded


def export_onnx(model_dir: str | Path, output_dir: str | Path | None = None, quantize: bool = True) -> dict:
    """Write `<model_dir>/onnx/`: the fp32 and int8 ONNX models, the tokenizer, the run's metadata and the export info."""
    from finsent.modeling import load_trained

    model_dir = Path(model_dir)
    info = read_model_info(model_dir)
    out = Path(output_dir) if output_dir else model_dir / ONNX_DIR
    model, tokenizer = load_trained(model_dir, merge=True)
    reference = copy.deepcopy(model)
    k = QUANTIZATION["fp32_outlier_channels"] if quantize else 0
    split = split_outlier_channels(model, tokenizer, k, info.max_length) if k else 0
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        tmp = Path(tmp)
        names = export_fp32(model, tokenizer, tmp / ONNX_FP32, info.max_length)
        diff = check_parity(reference, tokenizer, tmp / ONNX_FP32, names, info.max_length)
        if not diff <= PARITY_ATOL:
            raise FinsentError(
                f"{out}: the exported ONNX model differs from PyTorch by {diff:.3g} in the logits (> {PARITY_ATOL}); not written"
            )
        files = [ONNX_FP32]
        excluded: list[str] = []
        if quantize:
            excluded = quantize_int8(tmp / ONNX_FP32, tmp / ONNX_INT8)
            files.append(ONNX_INT8)
        for name in files:
            (tmp / name).replace(out / name)
    tokenizer.save_pretrained(str(out))
    for name in RUN_METADATA_FILES:
        if (model_dir / name).is_file() and model_dir.resolve() != out.resolve():
            shutil.copy2(model_dir / name, out / name)
    export = {
        "source": str(model_dir.resolve()),
        "version": info.version,
        "source_weights_sha256": weights_digest(model_dir),
        "opset": OPSET,
        "inputs": names,
        "files": files,
        "fp32_max_abs_logit_diff": diff,
        "quantization": {
            "method": "onnxruntime.quantization.quantize_dynamic",
            **QUANTIZATION,
            "linear_layers_split": split,
            "fp32_nodes": len(excluded),
        }
        if quantize
        else None,
        "created_at": dt.datetime.now(dt.timezone.utc),
    }
    write_export_info(out, export)
    return {**export, "output_dir": str(out)}
