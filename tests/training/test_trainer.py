"""Real short training runs (packaged MiniLM, real PhraseBank sentences) checked against the artifact contract."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import train_short
from finsent.core.hardware import has_bf16
from finsent.core.metrics import error_types
from finsent.data.corpus import load_data
from finsent.data.splits import split_data

pytestmark = pytest.mark.slow  # every test here trains a model

CONTRACT_KEYS = {
    "version",
    "model_name",
    "use_lora",
    "accuracy",
    "macro_f1",
    "avg_confidence",
    "ece",
    "per_class",
    "confusion_matrix",
    "trainable_params",
    "total_params",
    "trainable_percent",
    "train_runtime_s",
    "n_train",
    "n_val",
    "n_test",
    "data",
    "config",
    "versions",
    "created_at",
}
LOG_COLUMNS = [
    "sample_id",
    "source",  # issue 22: the corpus each test sentence came from
    "text",
    "true_label",
    "pred_label",
    "confidence",
    "margin",
    "prob_negative",
    "prob_neutral",
    "prob_positive",
    "is_correct",
    "error_type",
    "run_version",
]


def read_log(run):
    with open(run / "evaluation_log.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def check_contract(run, use_lora):
    results = json.loads((run / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert CONTRACT_KEYS <= set(results)
    assert results["use_lora"] is use_lora
    assert results["n_train"] == 400 and results["n_test"] == 226
    assert set(results["per_class"]) == {"negative", "neutral", "positive"}
    assert sum(c["support"] for c in results["per_class"].values()) == results["n_test"]
    assert np.asarray(results["confusion_matrix"]).sum() == results["n_test"]
    assert {"path", "sha256", "agreement", "seed", "duplicates_removed", "conflicts_removed"} <= set(results["data"])
    assert {"python", "torch", "transformers", "peft"} <= set(results["versions"])
    assert results["config"]["low_confidence"] == 0.6 and results["config"]["high_confidence"] == 0.9
    rows = read_log(run)
    assert list(rows[0]) == LOG_COLUMNS and len(rows) == results["n_test"]
    probs = np.array([[float(r[f"prob_{k}"]) for k in ("negative", "neutral", "positive")] for r in rows])
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    conf = np.array([float(r["confidence"]) for r in rows])
    assert np.allclose(conf, probs.max(1), atol=1e-6)
    correct = [r["is_correct"] == "True" for r in rows]
    assert correct == [r["true_label"] == r["pred_label"] for r in rows]
    assert np.mean(correct) == pytest.approx(results["accuracy"])
    assert [r["error_type"] for r in rows] == error_types(correct, conf, 0.6, 0.9)
    assert {r["run_version"] for r in rows} == {results["version"]}
    assert {r["source"] for r in rows} == set(results["per_source"]) == {"phrasebank"}
    part = results["per_source"]["phrasebank"]  # one source: its metrics are the pooled ones
    assert part["accuracy"] == results["accuracy"] and part["n_test"] == results["n_test"] == 226
    return results


def test_lora_run_meets_contract(lora_run, phrasebank_zip):
    results = check_contract(lora_run, use_lora=True)
    assert (lora_run / "adapter_model.safetensors").is_file() and (lora_run / "adapter_config.json").is_file()
    assert (lora_run / "tokenizer.json").is_file() and (lora_run / "label_map.json").is_file()
    assert not (lora_run / "checkpoints").exists()
    assert 0 < results["trainable_percent"] < 5 and results["trainable_params"] < results["total_params"]
    # the test sentences in the log are exactly the held-out split: none was trained on
    split = split_data(load_data(phrasebank_zip, "all"), 42)
    texts = {r["text"] for r in read_log(lora_run)}
    assert texts == set(split.test.texts) and not texts & set(split.train.texts)
    assert results["accuracy"] > 0.7, "400 sentences and one epoch already beat the 61% majority class"


def test_full_run_meets_contract(full_run):
    results = check_contract(full_run, use_lora=False)
    assert (full_run / "model.safetensors").is_file() and not (full_run / "adapter_config.json").exists()
    assert results["trainable_percent"] == pytest.approx(100.0)
    assert results["accuracy"] > 0.7


@pytest.mark.skipif(not has_bf16(), reason="this CPU has no bf16 instructions (AMX-BF16, AVX512-BF16, ARM bf16)")
def test_bf16_run_on_a_cpu_that_has_it(lora_run, phrasebank_zip, tmp_path):
    """--precision bf16 trains in mixed precision on the CPU and keeps fp32 weights: the same contract, the same split,
    accuracy near the fp32 run's."""
    results = train_short(tmp_path / "bf16", phrasebank_zip, "--use_lora", "--precision", "bf16")
    fp32 = json.loads((lora_run / "results.json").read_text())
    assert results["config"]["precision"] == "bf16" and fp32["config"]["precision"] == "fp32"
    check_contract(tmp_path / "bf16", use_lora=True)
    assert [r["text"] for r in read_log(tmp_path / "bf16")] == [r["text"] for r in read_log(lora_run)]
    assert abs(results["accuracy"] - fp32["accuracy"]) < 0.05


def test_same_seed_same_split_and_metrics(lora_run, phrasebank_zip, tmp_path, capsys):
    again = train_short(tmp_path / "again", phrasebank_zip, "--use_lora", "--version", "v1")
    assert "never predicts" not in capsys.readouterr().out  # a healthy run predicts every label: no divergence warning
    first = json.loads((lora_run / "results.json").read_text())
    assert [r["text"] for r in read_log(tmp_path / "again")] == [r["text"] for r in read_log(lora_run)]
    for key in ("accuracy", "macro_f1", "confusion_matrix"):
        assert again[key] == first[key]
    assert again["ece"] == pytest.approx(first["ece"], abs=1e-6)


def test_diverged_training_warns(phrasebank_zip, tmp_path, capsys):
    """Learning rate 1 wrecks the model: it answers one label for everything, and training says so."""
    results = train_short(
        tmp_path / "diverged",
        phrasebank_zip,
        "--use_lora",
        "--learning_rate",
        "1",
        "--max_train_samples",
        "64",
        "--max_eval_samples",
        "48",
        "--num_epochs",
        "1",
    )
    out = capsys.readouterr().out
    assert "finsent: warning: the model never predicts" in out and "lower --learning_rate (this run: 1)" in out
    assert min(sum(row) for row in zip(*results["confusion_matrix"])) == 0  # on test too, some label is never predicted


def test_evaluate_command_on_other_data(lora_run, phrasebank_zip, tmp_path):
    from finsent.apps.cli import main

    assert (
        main(
            [
                "evaluate",
                "--model_dir",
                str(lora_run),
                "--data_path",
                str(phrasebank_zip),
                "--agreement",
                "75",
                "--output_dir",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    rows = read_log(tmp_path / "eval")
    assert results["n_test"] == len(rows) == len(load_data(phrasebank_zip, "75"))
    assert np.mean([r["is_correct"] == "True" for r in rows]) == pytest.approx(results["accuracy"])


def test_version_defaults_to_next_free(tmp_path, lora_run, full_run):
    from finsent.runs.folder import next_version

    assert json.loads((full_run / "results.json").read_text())["version"] == "v2"

    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    assert next_version(tmp_path) == "v3"
    assert next_version(lora_run.parent) == "v3"  # siblings lora (v1) and full (v2) label by results.json


def test_interrupted_training_resumes(tmp_path, phrasebank_zip):
    out = tmp_path / "resumable"
    args = [
        sys.executable,
        "train.py",
        "--data_path",
        str(phrasebank_zip),
        "--output_dir",
        str(out),
        "--use_lora",
        "--num_epochs",
        "3",
        "--max_train_samples",
        "200",
        "--max_eval_samples",
        "60",
        "--max_length",
        "64",
    ]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # a shell's background job inherits SIGINT ignored (as in `bash .ci/run &`), and Python then raises no
    # KeyboardInterrupt: give the child the default disposition, as an interactive terminal does
    proc = subprocess.Popen(
        args,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 240
    while not list((out / "checkpoints").glob("checkpoint-*/trainer_state.json")) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "--resume_from_checkpoint auto" in err and "Traceback" not in err
    assert not (out / "results.json").exists()
    done = subprocess.run(
        args + ["--resume_from_checkpoint", "auto"], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["epochs_run"] == 3 and results["version"] == "v1"


def test_training_killed_with_sigkill_resumes_to_a_complete_run_folder(tmp_path, phrasebank_zip):
    """kill -9 after the first checkpoint (no handler runs), then --resume_from_checkpoint auto finishes the run."""
    from finsent.runs.folder import EVALUATION_LOG, MODEL_INFO, RESULTS, read_log, read_model_info, read_results

    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "finsent",
        "train",
        "--data_path",
        str(phrasebank_zip),
        "--output_dir",
        str(out),
        "--use_lora",
        "--num_epochs",
        "2",
        "--max_train_samples",
        "300",
        "--max_eval_samples",
        "60",
        "--max_length",
        "64",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not list((out / "checkpoints").glob("checkpoint-*/trainer_state.json")) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    proc.kill()  # SIGKILL
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / RESULTS).exists() and (out / MODEL_INFO).is_file()
    done = subprocess.run(args + ["--resume_from_checkpoint", "auto"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout
    results = read_results(out)
    assert results["epochs_run"] == 2 and results["version"] == read_model_info(out).version
    assert len(read_log(out)) == results["n_test"] == 60 and (out / EVALUATION_LOG).is_file()
    assert (out / "adapter_model.safetensors").is_file() and not (out / "checkpoints").exists()


def test_checkpoint_with_other_label_order_is_remapped(full_run, tmp_path):
    """A head trained as positive/negative/neutral (FinBERT's order) predicts the same sentiment after loading."""
    import torch

    from finsent.inference.predictor import Predictor
    from finsent.models.loading import load_base_model, load_trained
    from finsent.runs.folder import read_model_info, write_model_info

    model, tok = load_trained(full_run)
    texts = [r["text"] for r in read_log(full_run)][:40]
    expected, _ = Predictor(full_run).logits(texts)
    order = [2, 0, 1]  # positive, negative, neutral
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight[order].clone())
        model.classifier.bias.copy_(model.classifier.bias[order].clone())
    model.config.id2label = {0: "positive", 1: "negative", 2: "neutral"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(tmp_path / "finbert_order")
    reloaded = load_base_model(str(tmp_path / "finbert_order")).eval()
    assert reloaded.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    run = tmp_path / "reloaded"  # the reloaded model as a run folder, scored by the one scoring path
    reloaded.save_pretrained(run)
    tok.save_pretrained(run)
    write_model_info(run, read_model_info(full_run))
    assert np.allclose(Predictor(run).logits(texts)[0], expected, atol=1e-4)
