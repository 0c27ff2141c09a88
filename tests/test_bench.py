"""The benchmark scripts: the TF-IDF baseline end to end on real PhraseBank splits, the goal lines, tuning overrides."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import ROOT


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # imports the training stack and fits two seeds
def test_accuracy_benchmark_tfidf_two_seeds(phrasebank_zip, tmp_path):
    accuracy = load_script("accuracy")
    assert (
        accuracy.main(
            ["--data_path", str(phrasebank_zip), "--methods", "tfidf", "--seeds", "0", "1", "--out", str(tmp_path)]
        )
        == 0
    )
    saved = json.loads((tmp_path / "accuracy_all.json").read_text())
    row = saved["summary"]["TF-IDF + logistic regression"]
    assert len(row["accuracy"]["values"]) == 2 and len(saved["per_seed"]["TF-IDF + logistic regression"]) == 2
    assert 0.8 < row["accuracy"]["mean"] < 0.95  # well above the 61 % majority class, well below fine-tuning
    pooled = row["calibration_pooled"]  # both seeds' test sentences, each scaled by its own temperature
    assert pooled["n"] == sum(len(r["test_correct"]) for r in saved["per_seed"]["TF-IDF + logistic regression"]) > 400
    assert 0.005 < pooled["floor"] < pooled["floor_per_seed"] < 0.06
    md = (tmp_path / "accuracy_all.md").read_text()
    assert "| TF-IDF + logistic regression |" in md and "seeds [0, 1]" in md
    assert f"| TF-IDF + logistic regression | {pooled['n']} | {row['ece_calibrated']['mean']:.4f} |" in md


@pytest.mark.slow  # embeds every sentence with MiniLM
def test_accuracy_update_remeasures_one_method_and_keeps_the_rest(phrasebank_zip, tmp_path):
    accuracy = load_script("accuracy")
    common = ["--data_path", str(phrasebank_zip), "--seeds", "0", "1", "--out", str(tmp_path)]
    assert accuracy.main([*common, "--methods", "tfidf"]) == 0
    tfidf_before = json.loads((tmp_path / "accuracy_all.json").read_text())["per_seed"]["TF-IDF + logistic regression"]
    assert accuracy.main([*common, "--methods", "frozen", "--update"]) == 0
    saved = json.loads((tmp_path / "accuracy_all.json").read_text())
    assert list(saved["per_seed"]) == ["TF-IDF + logistic regression", "frozen MiniLM embeddings + logistic regression"]
    assert saved["per_seed"]["TF-IDF + logistic regression"] == tfidf_before and saved["kept_from_earlier_run"] == [
        "TF-IDF + logistic regression"
    ]
    assert len(saved["per_seed"]["frozen MiniLM embeddings + logistic regression"]) == 2
    assert "not re-measured: TF-IDF + logistic regression" in (tmp_path / "accuracy_all.md").read_text()
    with pytest.raises(accuracy.FinsentError, match="measured on seeds \\[0, 1\\], not \\[0\\]"):
        accuracy.main(
            [
                "--data_path",
                str(phrasebank_zip),
                "--seeds",
                "0",
                "--out",
                str(tmp_path),
                "--methods",
                "tfidf",
                "--update",
            ]
        )


def test_goal_lines_say_not_reached():
    accuracy = load_script("accuracy")
    summary = accuracy.summarize(
        {
            "finsent default recipe": [
                {
                    "accuracy": 0.96,
                    "macro_f1": 0.95,
                    "ece": 0.03,
                    "ece_calibrated": 0.015,
                    "train_runtime_s": 310.0,
                    "trainable_params": 10,
                },
            ]
        }
    )
    md = accuracy.to_markdown(summary, type("A", (), {"agreement": "all", "seeds": [0]})(), accuracy.GOALS["all"])
    assert "goal accuracy >= 0.975: 0.9600 (NOT reached)" in md
    assert "goal ece_calibrated <= 0.02: 0.0150 (reached)" in md
    assert "slowest 310 s (NOT reached)" in md


def test_ece_goal_is_judged_on_the_seeds_pooled():
    accuracy = load_script("accuracy")

    def row(conf, correct):
        return {
            "accuracy": 0.9,
            "macro_f1": 0.9,
            "ece": 0.05,
            "ece_calibrated": 0.04,
            "train_runtime_s": 1.0,
            "trainable_params": 10,
            "test_confidence_calibrated": conf,
            "test_correct": correct,
        }

    # two seeds of ten sentences at confidence 0.9: nine right in each, so pooled ECE is 0 while the table's per-seed ECE says 0.04
    rows = [row([0.9] * 10, [1] * 9 + [0]), row([0.9] * 10, [0] + [1] * 9)]
    summary = accuracy.summarize({"finsent default recipe": rows})
    md = accuracy.to_markdown(summary, type("A", (), {"agreement": "all", "seeds": [0, 1]})(), accuracy.GOALS["all"])
    assert "goal ece_calibrated <= 0.02: pooled over 2 seeds 0.0000 (reached; floor " in md
    assert "per-seed mean 0.0400, whose floor alone is" in md
    assert summary["finsent default recipe"]["calibration_pooled"]["n"] == 20


def test_tune_overrides_are_typed_like_the_config():
    tune = load_script("tune")
    got = tune.parse_overrides(
        [
            "num_epochs=3",
            "learning_rate=2e-3",
            "use_lora=false",
            "extra_train_agreement=75",
            "max_train_samples=none",
            "max_length=64",
        ]
    )
    assert got == {
        "num_epochs": 3.0,
        "learning_rate": 2e-3,
        "use_lora": False,
        "extra_train_agreement": "75",
        "max_train_samples": None,
        "max_length": 64,
    }
    with pytest.raises(SystemExit, match="not a TrainConfig field"):
        tune.parse_overrides(["epochs=3"])
    with pytest.raises(SystemExit, match="num_epochs takes a float"):
        tune.parse_overrides(["num_epochs=three"])


def test_tune_pools_calls_of_one_configuration_and_ranks_by_paired_gain():
    tune = load_script("tune")

    def row(name, overrides, accs):
        return {
            "name": name,
            "seeds": list(accs),
            "overrides": overrides,
            "per_seed": [
                {
                    "seed": s,
                    "val_accuracy": a,
                    "val_macro_f1": a,
                    "val_ece": 0.03,
                    "train_runtime_s": 100.0,
                    "epochs_run": 3.0,
                }
                for s, a in accs.items()
            ],
        }

    rows = [
        row("default", [], {0: 0.97, 1: 0.95}),
        row("lr 5e-4", ["learning_rate=5e-4"], {0: 0.98}),
        row("default (seeds 2-4)", [], {2: 0.90}),
        row("lr 5e-4 (seeds 1-2)", ["learning_rate=5e-4"], {1: 0.95, 2: 0.93}),
    ]
    got = tune.pooled(rows)
    assert [(g["name"], g["seeds"]) for g in got] == [("lr 5e-4", [0, 1, 2]), ("default", [0, 1, 2])]
    assert got[0]["gain"] == pytest.approx((0.01 + 0.0 + 0.03) / 3)  # paired on each seed, not a difference of means
    assert "| lr 5e-4 | [0, 1, 2] | 0.9533 ± 0.0205 | +0.0133 |" in tune.to_markdown(rows)


@pytest.mark.slow  # trains a model
def test_tune_records_the_lora_settings_that_ran_not_only_their_path(phrasebank_zip, tmp_path):
    tune = load_script("tune")
    lora = tmp_path / "rank4.json"
    lora.write_text(json.dumps({"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["query", "value"]}))
    args = [
        "--name",
        "rank 4",
        "--data_path",
        str(phrasebank_zip),
        "--seeds",
        "0",
        "--out",
        str(tmp_path / "out"),
        "--set",
        f"lora_config={lora}",
        "max_train_samples=96",
        "max_eval_samples=48",
        "num_epochs=1",
    ]
    assert tune.main(args) == 0
    lora.unlink()  # the row must still say what ran
    row = json.loads((tmp_path / "out" / "tuning.jsonl").read_text().splitlines()[-1])
    assert row["recipe"]["lora"] == {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["query", "value"]}
    assert row["overrides"][0] == f"lora_config={lora}" and len(row["per_seed"]) == 1
    assert 0.0 <= row["per_seed"][0]["val_accuracy"] <= 1.0 and row["per_seed"][0]["epochs_run"] == 1.0
    assert "| rank 4 | [0] |" in (tmp_path / "out" / "tuning.md").read_text()


def test_roofline_counts_the_issues_multiply_adds_and_measures_gemm_peaks():
    from transformers import AutoConfig

    from finsent.models.hub import packaged_model_dir

    serving = load_script("serving")
    config = AutoConfig.from_pretrained(packaged_model_dir())
    # issue 13: all-MiniLM-L6-v2 does about 366 M multiply-adds on a 34-token sentence
    assert serving.macs_per_sentence(config, 34) == pytest.approx(366e6, rel=0.01)
    assert serving.macs_per_sentence(config, 68) > 2 * serving.macs_per_sentence(config, 34)  # attention is quadratic
    for dtype in ("int8", "int8_onnxruntime", "fp32"):  # OpenVINO's int8 kernel (the default runtime's), onnxruntime's
        peak = serving.gemm_peak(dtype, threads=1, seconds=0.2)
        assert peak["kind"] == f"gemm_{dtype}" and 1e8 < peak["macs_per_s"] < 1e14
    flags = serving.cpu_flags()
    cpuinfo = open("/proc/cpuinfo").read().split()
    from finsent.core.hardware import ENGINE_FLAGS

    assert set(flags) <= set(ENGINE_FLAGS) and all(f in cpuinfo for f in flags)


@pytest.mark.slow
def test_a_model_travels_as_fp16_chunks_and_comes_back_as_fp32(tmp_path):
    from safetensors.torch import load_file

    from finsent.models.hub import packaged_model_dir
    from finsent.models.loading import load_base_model

    pack = load_script("pack_weights")
    chunks, restored_dir = tmp_path / ".gpu" / "minilm", tmp_path / "minilm"
    pack.main(["pack", str(packaged_model_dir()), str(chunks), "--chunk_mb", "20"])
    sizes = [p.stat().st_size for p in sorted(chunks.glob("chunk-*"))]
    assert len(sizes) == 3 and max(sizes) <= 20 * 2**20 and sum(sizes) < 48e6  # the 91 MB model, halved, in pieces
    pack.main(["restore", str(chunks), str(restored_dir)])
    original = load_file(str(packaged_model_dir() / pack.WEIGHTS))
    restored = load_file(str(restored_dir / pack.WEIGHTS))
    assert restored.keys() == original.keys()
    for name, tensor in original.items():
        assert restored[name].dtype == tensor.dtype
        assert (restored[name].float() - tensor.float()).abs().max() <= 1e-3 * tensor.float().abs().max() + 1e-7, name
    assert load_base_model(str(restored_dir)).config.hidden_size == 384  # loads as --model_name


def test_ab_level_reads_ab_s_report_from_a_real_server():
    import shutil
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    if not shutil.which("ab"):
        pytest.skip("ab (apache2-utils) is not installed")
    bodies = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            status = 200 if len(bodies) % 5 else 500  # every fifth request fails
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        level = load_script("serving").ab_level(f"http://127.0.0.1:{server.server_port}", "Sales rose .", 2, 1)
    finally:
        server.shutdown()
    # ab stops at its time limit with up to one request per client still in flight, which it does not count
    assert bodies[0] == {"texts": ["Sales rose ."]} and len(bodies) - 2 <= level["requests"] <= len(bodies)
    assert len(bodies) // 5 - 2 <= level["errors"] <= len(bodies) // 5 and level["requests_per_s"] > 0
    assert 0 <= level["p50_ms"] <= level["p99_ms"] and level["clients"] == 2


def test_serving_report_judges_the_early_exit_against_its_full_model_on_the_same_engine():
    serving = load_script("serving")

    def row(kind, speed, **extra):
        return {"kind": kind, "sentences_per_s": speed, "tokenize_share": 0.1, "peak_rss_mb": 800.0,
                "agreement_with_torch": 1.0, "loadavg_before": [1.0], "loadavg_after": [1.0], **extra}  # fmt: skip

    def report(speed, agreement, default=1000):
        result = {
            "created_at": "now", "command": "c", "threads": 2, "batch_size": 32, "n": 100, "latency": [],
            "machine": {"cpu": "x", "cpus": 2, "cpu_flags": [], "loadavg_start": [1], "loadavg_end": [1]},
            "model": {"version": "v", "model_name": "m", "max_length": 128, "macs_per_sentence": 3e8, "mean_tokens": 30},
            "peaks": {"int8": 5e11, "fp32": 2e11},
            "throughput": [row("pipeline", 100), row("pipeline_b32", 120), row("default", default or 1000),
                           row("early_exit_full", 1000),
                           row("early_exit", speed, agreement_with_final_layer=agreement)],
            "goal": {"engine": "openvino-int8", "default_sentences_per_s": default, "speedup_vs_pipeline_b32": 8.3},
            "early_exit_dir": "runs/exits",
        }  # fmt: skip
        serving.roofline(result)
        serving.judge(result)
        return serving.markdown(result)

    md = report(1600, 0.996)
    assert "| 1600 | 16.0x | 13.3x | | | | 10% | 800 | 99.60% with its final layer |" in md
    assert "Measured 1.60x (1600 against 1000 sentences/s) at 99.60%: **met**" in md
    assert "at 99.40%: **not met**" in report(1600, 0.994)  # fast, but agrees too little
    assert "Measured 1.40x (1400 against 1000 sentences/s) at 99.60%: **not met**" in report(1400, 0.996)
    # 1000 sentences/s x 300 M multiply-adds = 300 G/s, 60 % of the 500 G/s int8 peak; 8.3x the batched pipeline
    assert "Measured 1000 sentences/s, 8.3x the batched pipeline, 60% of the best peak: **met**" in md
    assert "Goal: the default path" not in report(1600, 0.996, default=None)  # no default speed: no verdict


def test_source_prior_bias_undoes_a_shifted_prior_and_lifts_validation_accuracy():
    import numpy as np

    source_prior = load_script("source_prior")
    rng = np.random.default_rng(0)
    labels = rng.choice(3, size=3000, p=[0.15, 0.65, 0.20])
    logits = rng.normal(0, 1, (3000, 3))
    logits[np.arange(3000), labels] += 2.0
    logits += np.array([1.0, 0.0, 1.0])  # a model that learned a polar-heavy prior
    nll_bias = source_prior.fit_bias_nll(logits, labels)
    assert nll_bias[1] == 0 and nll_bias[0] < -0.5 and nll_bias[2] < -0.5
    acc_bias = source_prior.fit_bias_accuracy(logits, labels)
    before = source_prior.accuracy(logits, labels)
    assert source_prior.accuracy(logits + acc_bias, labels) > before + 0.02
    assert source_prior.accuracy(logits + nll_bias, labels) > before + 0.02


def test_augmented_student_variants_are_seeded_new_texts_with_training_cashtags_only():
    augmented = load_script("augmented_student")
    texts = [
        "$AAPL beats estimates as iPhone sales climb in China https://t.co/abc",
        "$TSLA shares slide after deliveries miss the consensus forecast",
        "Short one",
    ]
    out = augmented.variants(texts, seed=3)
    assert out == augmented.variants(texts, seed=3)
    assert not set(out) & set(texts)
    for text in out:
        assert set(augmented.CASHTAG.findall(text)) <= {"$AAPL", "$TSLA"}


def test_entity_pooling_hands_the_head_the_first_marker_state_and_leaves_unmarked_text_alone():
    import torch

    from finsent.models import loading

    pooling = load_script("entity_pooling")
    tokenizer = loading.load_tokenizer(loading.resolve_model_name(None))
    model = loading.load_base_model(loading.resolve_model_name(None)).eval()
    batch = tokenizer(
        ["Tesla shares jump as «Ford» cuts guidance", "Ford cuts guidance"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        plain = model(**batch, output_hidden_states=True)
        hooked = pooling.attach(model, pooling._open_id(tokenizer))
        assert pooling.attach(hooked, 0) is hooked  # once only
        logits = hooked(**batch).logits
    pos = batch["input_ids"][0].tolist().index(pooling._open_id(tokenizer))
    assert pos > 1
    pooler = model.bert.pooler
    expected = model.classifier(pooler.activation(pooler.dense(plain.hidden_states[-1][0, pos])))
    torch.testing.assert_close(logits[0], expected)
    assert not torch.allclose(logits[0], plain.logits[0])
    torch.testing.assert_close(logits[1], plain.logits[1])  # no marker: the first token, as before
