"""Predictor (torch and onnx backends) and the ONNX int8 export, on the short LoRA run and real PhraseBank sentences."""

import csv
import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import finsent_subprocess
from finsent.core.errors import FinsentError
from finsent.data.corpus import load_data
from finsent.data.splits import split_data
from finsent.inference import predictor as predictor_module
from finsent.inference.predictor import Predictor

pytestmark = pytest.mark.slow  # every test here needs the short training run

LONG = "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007 . " * 12


@pytest.fixture(scope="module")
def torch_predictor(lora_run):
    return Predictor(lora_run, "torch", batch_size=16)


@pytest.fixture(scope="module")
def test_texts(phrasebank_zip):
    return split_data(load_data(phrasebank_zip, "all"), 42).test.texts


def eval_log(run):
    with open(run / "evaluation_log.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_predictions_match_the_runs_evaluation_log(torch_predictor, lora_run):
    rows = eval_log(lora_run)
    preds = torch_predictor.predict([r["text"] for r in rows])
    assert [p["label"] for p in preds] == [r["pred_label"] for r in rows]
    for p in preds:
        assert set(p["probabilities"]) == {"negative", "neutral", "positive"}
        assert sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert p["confidence"] == max(p["probabilities"].values())


def test_input_order_and_batch_size_do_not_change_results(lora_run, torch_predictor, test_texts):
    texts = test_texts[:40]
    logits, _ = torch_predictor.logits(texts)
    reversed_logits, _ = Predictor(lora_run, "torch", batch_size=1).logits(texts[::-1])
    assert np.allclose(reversed_logits[::-1], logits, atol=1e-4)


def test_chunked_tokenization_on_a_thread_pool_changes_nothing(lora_run, torch_predictor, test_texts, monkeypatch):
    texts = test_texts[:45] + [LONG]
    logits, truncated = torch_predictor.logits(texts)
    monkeypatch.setattr(predictor_module, "TOKENIZE_CHUNK", 7)  # 7 chunks, tokenized ahead on the pool
    chunked = Predictor(lora_run, "torch", batch_size=4)
    assert chunked.tokenizer_threads >= 1
    chunked_logits, chunked_truncated = chunked.logits(texts)
    assert np.allclose(chunked_logits, logits, atol=1e-4)
    assert chunked_truncated.tolist() == truncated.tolist() and truncated[-1]
    with pytest.raises(FinsentError, match="text 12 of 46"):  # numbered over all texts, not within a chunk
        chunked.logits(texts[:11] + ["bad \udc80"] + texts[12:])


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="a GPU is present: --device cuda runs instead of failing"
)
def test_device_cuda_without_a_gpu_is_one_line_and_exit_2(lora_run, phrasebank_zip, tmp_path):
    cases = [
        ["predict", "--model_dir", str(lora_run), "--device", "cuda", "Profit rose"],
        ["evaluate", "--model_dir", str(lora_run), "--device", "cuda", "--data_path", str(phrasebank_zip)],
    ]
    for argv in cases:
        proc = finsent_subprocess(*argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert proc.stderr.strip().splitlines() == [
            "finsent: error: --device cuda: PyTorch sees no CUDA GPU here (torch.cuda.is_available() is False); "
            "use --device cpu"
        ]
    with pytest.raises(FinsentError, match="only the torch backend runs on a GPU"):
        Predictor(lora_run, "onnx", device="cuda")


def test_the_shared_encoder_tokenizes_like_transformers(torch_predictor, test_texts):
    """Token ids equal the transformers tokenizer's with truncation; a text cut is flagged, one exactly at the limit
    is not; threads share the encoder (nothing re-sets its truncation)."""
    tokenizer, max_length = torch_predictor.tokenizer, torch_predictor.info.max_length
    at_limit = next(t for t in (LONG[:n] for n in range(40, len(LONG))) if len(tokenizer(t)["input_ids"]) == max_length)
    texts = [*test_texts[:50], LONG, at_limit, "$TSLA up 3% https://t.co/x 🚀"]
    ids, truncated = torch_predictor.encode(texts)
    assert ids == tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    assert truncated.tolist() == [len(x) > max_length for x in tokenizer(texts)["input_ids"]]
    assert truncated[-3] and not truncated[-2]
    with ThreadPoolExecutor(4) as pool:
        assert all(r[0] == ids for r in pool.map(torch_predictor.encode, [texts] * 8))


def test_truncation_is_flagged(torch_predictor):
    max_length = torch_predictor.info.max_length
    assert len(torch_predictor.tokenizer(LONG)["input_ids"]) > max_length
    preds = torch_predictor.predict(["Sales rose .", LONG, "Net loss widened ."])
    assert [p["truncated"] for p in preds] == [False, True, False]


def test_probabilities_use_the_runs_temperature(lora_run, tmp_path, torch_predictor, test_texts):
    run = tmp_path / "hot"
    shutil.copytree(lora_run, run)
    results = json.loads((run / "results.json").read_text())
    results["temperature"] = 3.0
    (run / "results.json").write_text(json.dumps(results))
    hot = Predictor(run, "torch")
    assert hot.info.temperature == 3.0
    texts = test_texts[:20]
    cold_scores, hot_scores = torch_predictor.score(texts), hot.score(texts)
    logits, _ = torch_predictor.logits(texts)
    expected = np.exp(logits / 3.0) / np.exp(logits / 3.0).sum(1, keepdims=True)
    assert np.allclose(hot_scores.probs, expected, atol=1e-5)
    assert (hot_scores.probs.argmax(1) == cold_scores.probs.argmax(1)).all()
    if torch_predictor.info.temperature < 3.0:
        assert (hot_scores.probs.max(1) < cold_scores.probs.max(1)).all()


def test_bad_model_folders(tmp_path, lora_run):
    with pytest.raises(FinsentError, match="no such run folder"):
        Predictor(tmp_path / "missing")
    with pytest.raises(FinsentError, match="finsent export-onnx"):
        Predictor(lora_run, "onnx")
    pickled = tmp_path / "pickled"
    shutil.copytree(lora_run, pickled)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    with pytest.raises(FinsentError, match="pickle weights are not loaded"):
        Predictor(pickled, "torch")
    with pytest.raises(FinsentError, match="--backend"):
        Predictor(lora_run, "tensorflow")


def test_export_writes_fused_fp32_and_int8_with_metadata(onnx_run):
    import collections

    import onnx
    from transformers import AutoConfig

    from finsent.models.hub import packaged_model_dir

    out = onnx_run / "onnx"
    info = json.loads((out / "export.json").read_text())
    assert info["files"] == ["model.onnx", "model.int8.onnx", "model.ort.int8.onnx"]
    assert info["ort_quantization"]["method"] == "onnxruntime.quantize_dynamic"
    assert info["fp32_max_abs_logit_diff"] < 1e-3
    q = info["quantization"]
    assert q["method"] == "nncf.quantize" and q["format"] == "QDQ"
    assert q["calibration_sentences"] == 256  # from the run's own training split
    assert (out / "model.int8.onnx").stat().st_size < 0.8 * (out / "model.onnx").stat().st_size
    for name in ("tokenizer.json", "finsent_model.json", "label_map.json", "results.json"):
        assert (out / name).is_file(), name
    layers = AutoConfig.from_pretrained(packaged_model_dir()).num_hidden_layers

    def ops(name):
        return collections.Counter(n.op_type for n in onnx.load(str(out / name), load_external_data=False).graph.node)

    fp32, int8 = ops("model.onnx"), ops("model.int8.onnx")
    int8_graph = onnx.load(str(out / "model.int8.onnx"), load_external_data=False).graph.node
    # the transformer optimizer fused every fp32 layer: one attention op, two skip-LayerNorms and one GELU per layer
    assert fp32["Attention"] == layers and fp32["SkipLayerNormalization"] == 2 * layers
    assert fp32["BiasGelu"] + fp32["FastGelu"] == layers and fp32["EmbedLayerNormalization"] == 1
    assert info["fused_nodes"] == {k: v for k, v in fp32.items() if k in info["fused_nodes"]}
    # int8 is a QDQ graph: the six linear layers of every encoder layer (and the attention products) take int8
    # inputs, while the small products over the outlier channels stay fp32
    assert int8["QuantizeLinear"] and int8["DequantizeLinear"] and q["int8_nodes"] >= 6 * layers
    dequantized = {n.output[0] for n in int8_graph if n.op_type == "DequantizeLinear"}
    outlier_products = [n for n in int8_graph if n.op_type == "MatMul" and n.name.endswith("_outliers")]
    assert len(outlier_products) == q["fp32_nodes"] == 6 * layers  # Q, K, V, output, FFN in/out
    assert not any(i in dequantized for n in outlier_products for i in n.input)


def test_int8_is_calibrated_on_the_runs_training_split(lora_run, tmp_path):
    from finsent.core.text import sentence_hash
    from finsent.export.graphs import calibration_texts
    from finsent.runs.folder import read_sentences

    texts = calibration_texts(lora_run, None, 100)
    train = set(read_sentences(lora_run)["train"])
    assert len(texts) == len(set(texts)) == 100 and all(sentence_hash(t) in train for t in texts)
    assert calibration_texts(lora_run, None, 100) == texts  # a fixed choice: the same export twice is the same
    moved = tmp_path / "moved"
    shutil.copytree(lora_run, moved)
    results = json.loads((moved / "results.json").read_text())
    results["data"]["path"] = str(tmp_path / "gone.zip")
    (moved / "results.json").write_text(json.dumps(results))
    with pytest.raises(FinsentError, match="is not there to calibrate int8 on; pass --data_path"):
        calibration_texts(moved, None, 100)


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_onnx_fp32_matches_pytorch(onnx_run, torch_predictor, test_texts, runtime):
    fp32 = Predictor(onnx_run, "onnx", onnx_file="model.onnx", onnx_runtime=runtime)
    assert fp32.metadata()["onnx"]["runtime"] == runtime
    ref, ref_trunc = torch_predictor.logits(test_texts)
    got, trunc = fp32.logits(test_texts)
    assert np.abs(got - ref).max() < 1e-3
    assert (trunc == ref_trunc).all()


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_int8_agrees_with_fp32_pytorch_on_the_test_split(onnx_run, torch_predictor, test_texts, runtime):
    assert len(test_texts) == 226
    int8 = Predictor(onnx_run, "onnx", onnx_runtime=runtime)
    ref = torch_predictor.score(test_texts).probs.argmax(1)
    got = int8.score(test_texts).probs.argmax(1)
    agreement = float((got == ref).mean())
    assert agreement >= 0.995, f"int8 on {runtime} agrees with fp32 PyTorch on {agreement:.2%} of the test split"


def test_predict_cli_on_either_onnx_runtime(onnx_run, test_texts):
    expected = [r["label"] for r in Predictor(onnx_run, "onnx").predict(test_texts[:5])]
    for runtime in ("openvino", "onnxruntime"):
        argv = ["--model_dir", str(onnx_run), "--backend", "onnx", "--onnx_runtime", runtime, *test_texts[:5]]
        proc = finsent_subprocess("predict", *argv)
        assert proc.returncode == 0, proc.stderr
        assert [json.loads(line)["label"] for line in proc.stdout.splitlines()] == expected


def test_export_when_the_training_data_moved(onnx_run, tmp_path, phrasebank_zip):
    run = tmp_path / "moved"
    shutil.copytree(onnx_run, run, ignore=shutil.ignore_patterns("onnx"))
    results = json.loads((run / "results.json").read_text())
    results["data"]["path"] = str(tmp_path / "gone.zip")
    (run / "results.json").write_text(json.dumps(results))
    proc = finsent_subprocess("export-onnx", "--model_dir", str(run), "--no_tune")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("finsent: error: ") and "pass --data_path or --no_quantize" in last, proc.stderr
    assert not (run / "onnx").exists()  # nothing half-written
    proc = finsent_subprocess("export-onnx", "--model_dir", str(run), "--data_path", str(phrasebank_zip), "--no_tune")
    assert proc.returncode == 0, proc.stderr
    info = json.loads((run / "onnx" / "export.json").read_text())
    assert info["quantization"]["calibration_sentences"] == 256 and "engine" not in info


def test_an_export_from_an_earlier_finsent_is_named_on_openvino(onnx_run, tmp_path, capsys):
    run = tmp_path / "old"
    shutil.copytree(onnx_run, run)
    info = json.loads((run / "onnx" / "export.json").read_text())
    info["quantization"]["method"] = "onnxruntime.quantization.quantize_dynamic"
    (run / "onnx" / "export.json").write_text(json.dumps(info))
    Predictor(run, "onnx", onnx_runtime="onnxruntime")
    assert capsys.readouterr().err == ""
    Predictor(run, "onnx")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("finsent: warning: ") and "re-run `finsent export-onnx" in err[0]
    Predictor(onnx_run, "onnx")  # today's export: no warning
    assert capsys.readouterr().err == ""


def test_unknown_onnx_runtime_is_refused(onnx_run):
    with pytest.raises(FinsentError, match="--onnx_runtime 'tvm': expected one of openvino, onnxruntime"):
        Predictor(onnx_run, "onnx", onnx_runtime="tvm")


def test_exported_folder_serves_on_its_own(onnx_run, test_texts):
    alone = Predictor(onnx_run / "onnx", "onnx")
    in_run = Predictor(onnx_run, "onnx")
    assert alone.info.version == in_run.info.version == "v1"
    assert alone.metadata()["onnx"]["file"] == "model.int8.onnx"
    assert np.array_equal(alone.logits(test_texts[:10])[0], in_run.logits(test_texts[:10])[0])


def test_stale_export_is_refused(onnx_run, tmp_path):
    run = tmp_path / "retrained"
    shutil.copytree(onnx_run, run)
    weights = run / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b" ")
    with pytest.raises(FinsentError, match="re-run `finsent export-onnx"):
        Predictor(run, "onnx")


def test_backend_auto_picks_a_fresh_int8_export_else_torch(onnx_run, lora_run, tmp_path, test_texts):
    from finsent.inference.engines import tuned_engine
    from finsent.inference.factory import PredictorOptions, build_predictor, resolve_backend

    assert resolve_backend(onnx_run)[0] in ("onnx", "torch")  # torch where the tuner found torch-bf16 fastest
    assert resolve_backend(onnx_run, "onnx")[0] == "onnx"
    assert resolve_backend(lora_run)[0] == "torch"  # no export
    assert resolve_backend(onnx_run, "auto", "cuda")[0] == "torch"  # only torch runs on a GPU
    assert resolve_backend(onnx_run, "torch")[0] == "torch"
    stale = tmp_path / "retrained"
    shutil.copytree(onnx_run, stale)
    weights = stale / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b" ")
    backend, why = resolve_backend(stale)
    assert backend == "torch" and "no fresh model.int8.onnx export" in why
    auto = build_predictor(onnx_run)  # the engine export-onnx tuned for this CPU
    assert auto.metadata()["backend_choice"]["requested"] == "auto"
    tuned = tuned_engine(onnx_run / "onnx")[0]
    assert auto.backend_name == tuned.backend
    expected = Predictor(onnx_run, **tuned.predictor_kwargs()).predict(test_texts[:8])
    assert auto.predict(test_texts[:8]) == expected
    assert build_predictor(onnx_run, PredictorOptions(backend="torch")).backend_name == "torch"


def test_predict_says_once_which_backend_auto_chose(onnx_run, test_texts):
    proc = finsent_subprocess("predict", "--model_dir", str(onnx_run), *test_texts[:3])
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stderr.splitlines() if "backend" in line]
    assert len(said) == 1 and said[0].startswith("finsent: backend "), proc.stderr
    assert "(auto: the engine tuned for " in said[0], proc.stderr
    proc = finsent_subprocess("predict", "--model_dir", str(onnx_run), "--backend", "torch", *test_texts[:3])
    assert proc.returncode == 0 and "backend" not in proc.stderr
