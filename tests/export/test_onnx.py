"""The ONNX graph rewrites of the exporter on small real graphs: the outlier-channel split is exact in fp32 and helps int8."""

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from finsent.export.graphs import channel_absmax, int8_nodes, quantize_int8, split_outlier_channels


def two_linears_on_one_input(path, rng) -> None:
    """x -> (x @ Wq, x @ Wk) -> sum, like Q and K reading one LayerNorm output; x has two outlier channels."""
    wq = numpy_helper.from_array(rng.standard_normal((16, 8), dtype=np.float32), "Wq")
    wk = numpy_helper.from_array(rng.standard_normal((16, 8), dtype=np.float32), "Wk")
    nodes = [
        helper.make_node("MatMul", ["x", "Wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["x", "Wk"], ["k"], name="k_proj"),
        helper.make_node("Add", ["q", "k"], ["y"], name="sum"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])],
        [wq, wk],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_outlier_split_is_exact_in_fp32_and_leaves_the_outliers_out_of_int8(tmp_path):
    rng = np.random.default_rng(0)
    src, split, int8 = tmp_path / "g.onnx", tmp_path / "split.onnx", tmp_path / "int8.onnx"
    two_linears_on_one_input(src, rng)
    x = rng.standard_normal((3, 5, 16), dtype=np.float32)
    x[..., [3, 11]] *= 15  # two channels an order of magnitude larger, as in MiniLM's LayerNorm outputs
    absmax = channel_absmax(src, [{"x": x}])
    assert set(np.argsort(absmax["x"])[-2:]) == {3, 11}
    excluded = split_outlier_channels(src, split, absmax, k=2)
    assert sorted(excluded) == ["k_proj_outliers", "q_proj_outliers"]
    nodes = onnx.load(str(split)).graph.node
    assert sum(n.op_type == "Gather" for n in nodes) == 1 and sum(n.op_type == "Mul" for n in nodes) == 1  # shared
    assert np.abs(run(split, x) - run(src, x)).max() < 1e-4

    scale = np.where(np.isin(np.arange(16), [3, 11]), 15, 1).astype(np.float32)
    batches = [{"x": rng.standard_normal((3, 5, 16), dtype=np.float32) * scale} for _ in range(4)]
    quantize_int8(split, int8, batches, excluded)
    nodes = onnx.load(str(int8)).graph.node
    assert int8_nodes(int8) == 2  # q_proj_main and k_proj_main take int8 inputs; the outlier products stay fp32
    dequantized = {n.output[0] for n in nodes if n.op_type == "DequantizeLinear"}
    assert not any(i in dequantized for n in nodes if n.name.endswith("_outliers") for i in n.input)
    plain = tmp_path / "plain_int8.onnx"
    quantize_int8(src, plain, batches)
    assert int8_nodes(plain) == 2
    ref = run(src, x)
    assert np.abs(run(int8, x) - ref).mean() < np.abs(run(plain, x) - ref).mean()  # the split helps int8


def test_nncf_telemetry_is_off():
    """nncf would report each quantize call to Google Analytics; finsent turns that off before importing it."""
    import subprocess
    import sys

    code = (
        "from finsent.export.graphs import import_nncf; import_nncf(); "
        "from nncf.telemetry.wrapper import telemetry, NNCFTelemetryStub; "
        "assert isinstance(telemetry, NNCFTelemetryStub), type(telemetry)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NNCF_CI", "NNCF_DEV")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
