"""The engine tuner on a real exported run: it keeps the fastest engine that agrees with fp32 PyTorch, refuses one
that does not, the predictor factory loads its choice, and a run moved to another CPU gets one warning line."""

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from conftest import finsent_subprocess
from finsent.core.errors import FinsentError
from finsent.core.hardware import cpu_signature, same_cpu, usable_cores
from finsent.data.corpus import load_data
from finsent.data.splits import split_data
from finsent.export.tuning import held_out_inputs, tune_engine
from finsent.inference.engines import ENGINES, TIE, choose, tuned_engine
from finsent.inference.factory import PredictorOptions, build_predictor, resolve_engine
from finsent.inference.predictor import Predictor


@pytest.fixture(scope="module")
def test_texts(phrasebank_zip):
    return split_data(load_data(phrasebank_zip, "all"), 42).test.texts


@pytest.fixture
def run_copy(onnx_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(onnx_run, run)
    return run


def bias_the_logits(path, bias) -> None:
    """Add a constant to the graph's logits: a real engine that disagrees with the model it was exported from."""
    model = onnx.load(str(path))
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["logits_unbiased" if o == "logits" else o for o in node.output]
    graph.initializer.append(numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "logits_bias"))
    graph.node.append(helper.make_node("Add", ["logits_unbiased", "logits_bias"], ["logits"], name="bias_logits"))
    onnx.save(model, str(path))


def test_choose_takes_the_fastest_that_passed_and_breaks_a_tie_on_agreement():
    def row(name, rate, agreement, passed=True):
        return {"name": name, "sentences_per_s": rate, "agreement": agreement, "passed": passed}

    int8, bf16, wrong = row("int8", 406, 0.9956), row("bf16", 402, 1.0), row("fast", 900, 0.97, passed=False)
    assert choose([int8, bf16, wrong]) == bf16  # within 5 %: the one that agrees most
    assert choose([row("int8", 500, 0.9956), bf16]) == {**int8, "sentences_per_s": 500}  # 20 % faster wins
    assert choose([wrong, {"name": "torch-bf16", "passed": False, "skipped": "no bf16"}]) is None


def test_the_export_records_a_tuned_engine_that_agrees(onnx_run):
    info = json.loads((onnx_run / "onnx" / "export.json").read_text())
    record = info["engine"]
    assert same_cpu(record["cpu"]) and record["cpu"]["model"] == cpu_signature()["model"]
    names = [c["name"] for c in record["candidates"]]
    assert names == list(ENGINES)  # every engine is listed: measured, or skipped with the reason
    chosen = next(c for c in record["candidates"] if c["name"] == record["chosen"])
    assert chosen["passed"] and chosen["agreement"] >= record["agreement_goal"] == 0.995
    measured = [c for c in record["candidates"] if "skipped" not in c]
    assert {"openvino-int8", "onnxruntime-int8", "openvino-fp32", "torch-fp32"} <= {c["name"] for c in measured}
    fastest = max(c["sentences_per_s"] for c in measured if c["passed"])
    assert chosen == choose(record["candidates"]) and chosen["sentences_per_s"] >= (1 - TIE) * fastest
    assert record["sentences"] == len(held_out_inputs(onnx_run, None, 1000)) > 0


def test_the_tuner_refuses_an_engine_that_disagrees(run_copy):
    bias_the_logits(run_copy / "onnx" / "model.onnx", [0.0, 0.0, 50.0])  # the fp32 file now says "positive" to all
    record = tune_engine(run_copy, names=["openvino-fp32", "openvino-int8", "torch-fp32"], seconds=0.2)
    rows = {c["name"]: c for c in record["candidates"]}
    assert not rows["openvino-fp32"]["passed"] and rows["openvino-fp32"]["agreement"] < 0.995
    assert rows["openvino-int8"]["passed"] and rows["torch-fp32"]["passed"]
    assert record["chosen"] in ("openvino-int8", "torch-fp32")
    assert tuned_engine(run_copy / "onnx")[0].name == record["chosen"]
    with pytest.raises(FinsentError, match="no engine agrees with fp32 PyTorch"):
        tune_engine(run_copy, names=["openvino-fp32"], seconds=0.1)


def test_the_factory_loads_the_tuned_engine(run_copy, test_texts):
    record = tune_engine(run_copy, names=["onnxruntime-int8", "torch-fp32"], seconds=0.2)
    onnx_choice, _ = resolve_engine(run_copy, PredictorOptions(backend="onnx"))
    assert onnx_choice == {
        "backend": "onnx",
        "precision": "fp32",
        "onnx_file": "model.ort.int8.onnx",
        "onnx_runtime": "onnxruntime",
        "streams": next(c["streams"] for c in record["candidates"] if c["name"] == "onnxruntime-int8"),
    }
    auto = build_predictor(run_copy)
    assert auto.metadata()["backend_choice"]["reason"].startswith(
        f"auto: the engine tuned for {record['cpu']['model']}"
    )
    expected = Predictor(run_copy, **ENGINES[record["chosen"]].predictor_kwargs()).predict(test_texts[:6])
    assert auto.predict(test_texts[:6]) == expected
    asked, why = resolve_engine(run_copy, PredictorOptions(backend="onnx", onnx_runtime="openvino"))
    assert asked["onnx_runtime"] == "openvino" and asked["onnx_file"] == "model.int8.onnx" and why == "as asked"
    forced = build_predictor(run_copy, PredictorOptions(engine="openvino-fp32"))
    assert forced.metadata()["onnx"]["file"] == "model.onnx"


def test_the_tuner_times_two_streams_and_batch_jobs_load_the_faster_count(run_copy, test_texts):
    record = tune_engine(run_copy, names=["openvino-fp32", "torch-fp32"], seconds=0.2)
    row = next(c for c in record["candidates"] if c["name"] == "openvino-fp32")
    if usable_cores() >= 2:  # one pass of two threads against two concurrent passes of one thread
        rates = row["rate_by_streams"]
        assert set(rates) == {"1", "2"} and row["sentences_per_s"] == max(rates.values())
        assert row["streams"] == int(max(rates, key=rates.get))
    path = run_copy / "onnx" / "export.json"  # say two streams won: batch jobs load two, capped by --threads
    info = json.loads(path.read_text())
    next(c for c in info["engine"]["candidates"] if c["name"] == "openvino-fp32")["streams"] = 2
    path.write_text(json.dumps(info))
    options = PredictorOptions(engine="openvino-fp32", batch_size=4)
    two = build_predictor(run_copy, options)
    assert two.streams == min(2, usable_cores())
    assert build_predictor(run_copy, PredictorOptions(engine="openvino-fp32", threads=1)).streams == 1
    assert build_predictor(run_copy, options, streams=None).streams == min(2, usable_cores())  # a server: auto
    one = Predictor(run_copy, **ENGINES["openvino-fp32"].predictor_kwargs(), batch_size=4)
    texts = test_texts[:30]  # 8 batches, sorted by length, scored two at a time: results in input order
    expected, got = one.score(texts), two.score(texts)
    assert [r["label"] for r in got.records()] == [r["label"] for r in expected.records()]
    np.testing.assert_allclose(got.probs, expected.probs, atol=1e-5)


def test_a_run_tuned_on_another_cpu_gets_one_warning(run_copy, test_texts):
    path = run_copy / "onnx" / "export.json"
    info = json.loads(path.read_text())
    info["engine"]["cpu"] = {
        "model": "Intel(R) Xeon(R) Platinum 8488C",
        "flags": ["avx512_vnni", "amx_int8"],
        "cores": 2,
    }
    path.write_text(json.dumps(info))
    proc = finsent_subprocess("predict", "--model_dir", str(run_copy), *test_texts[:2])
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "Intel(R) Xeon(R) Platinum 8488C" in warnings[0]
    assert f"finsent tune-engine --model_dir {run_copy}" in warnings[0]
    proc = finsent_subprocess(
        "tune-engine", "--model_dir", str(run_copy), "--engines", "openvino-int8", "torch-fp32", "--seconds", "0.2"
    )
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1].startswith(f"engine for {cpu_signature()['model']}: ")
    proc = finsent_subprocess("predict", "--model_dir", str(run_copy), *test_texts[:2])
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr


def test_tune_engine_bad_input_is_one_line(lora_run):
    for argv, message in [
        (["--model_dir", str(lora_run)], "no export.json; run `finsent export-onnx"),
        (["--model_dir", str(lora_run), "--engines", "tvm-int4"], "--engine 'tvm-int4': expected one of"),
    ]:
        proc = finsent_subprocess("tune-engine", *argv)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert message in proc.stderr.strip().splitlines()[-1], proc.stderr


def test_an_exported_folder_alone_runs_the_fastest_onnx_engine(run_copy, test_texts):
    path = run_copy / "onnx" / "export.json"
    info = json.loads(path.read_text())
    rows = info["engine"]["candidates"]
    torch_bf16 = {"name": "torch-bf16", "backend": "torch", "precision": "bf16", "file": None, "runtime": None}
    rows[:] = [c for c in rows if c["name"] != "torch-bf16"] + [
        {**torch_bf16, "agreement": 1.0, "sentences_per_s": 1e6, "passed": True}
    ]
    info["engine"]["chosen"] = "torch-bf16"
    path.write_text(json.dumps(info))
    in_run = build_predictor(run_copy)  # the run folder has the weights torch needs
    assert in_run.backend_name == "torch" and in_run.metadata()["precision"] == "bf16"
    alone = build_predictor(run_copy / "onnx")  # an exported folder has none: its fastest ONNX engine
    assert alone.backend_name == "onnx"
    assert alone.metadata()["onnx"]["file"] == tuned_engine(run_copy / "onnx", onnx_only=True)[0].file
    assert len(alone.predict(test_texts[:3])) == 3
