"""Entity-level runs end to end on the training side (issue 23): train, results, evaluate, export, distill."""

from __future__ import annotations

import csv

import pytest

from conftest import FINENTITY, SENTFIN, finsent_subprocess
from finsent.core.serialization import read_json
from finsent.core.text import sentence_hash
from finsent.data.corpus import load_entity_data
from finsent.data.entities import EntityFormat
from finsent.data.splits import normalise
from finsent.runs.folder import read_model_info, read_sentences


def test_an_entity_run_records_its_task_and_scores_each_pair(entity_run):
    info = read_model_info(entity_run)
    assert info.task == "entity" and EntityFormat.from_json(info.entity_input).style == "markers"
    results = read_json(entity_run / "results.json")
    assert results["task"] == "entity" and set(results["per_source"]) == {"sentfin", "finentity"}
    assert 0 <= results["mixed_accuracy"] <= 1 and results["n_mixed"] > 0
    with open(entity_run / "evaluation_log.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[2:4] == ["text", "entity"] and len(rows) == results["n_test"]
    # each logged pair is a real labelled pair of the corpora, and no test text was trained on
    data = load_entity_data([str(SENTFIN), str(FINENTITY)])
    gold = {(normalise(t), normalise(e)): lab for t, e, lab in zip(data.texts, data.entities, data.labels)}
    assert all((normalise(r["text"]), normalise(r["entity"])) in gold for r in rows)
    split = read_sentences(entity_run)
    assert not {sentence_hash(r["text"]) for r in rows} & set(split["train"])
    n_right = sum(r["is_correct"] == "True" for r in rows)
    assert results["accuracy"] == pytest.approx(n_right / len(rows))


def test_evaluate_an_entity_run_on_pairs_and_refuse_the_task_mismatch(entity_run, lora_run, tmp_path):
    table = tmp_path / "pairs.csv"
    table.write_text(
        "text,entity,label\n"
        "Tesla shares jump as Ford cuts guidance,Tesla,positive\n"
        "Tesla shares jump as Ford cuts guidance,Ford,negative\n"
        "Infosys wins a large order,Infosys,positive\n",
        encoding="utf-8",
    )
    out = finsent_subprocess(
        "evaluate", "--model_dir", str(entity_run), "--data_path", str(table), "--output_dir", str(tmp_path / "e")
    )
    assert out.returncode == 0, out.stderr
    assert "on 3 (text, entity) pairs" in out.stdout and "mixed_accuracy" in out.stdout
    with open(tmp_path / "e" / "evaluation_log.csv", encoding="utf-8") as f:
        assert [r["entity"] for r in csv.DictReader(f)] == ["Tesla", "Ford", "Infosys"]
    # an entity run as the teacher of a sentence-level student: one line, exit 2
    bad = finsent_subprocess(
        "distill", "--teacher", str(entity_run), "--data_path", str(SENTFIN), "--output_dir", str(tmp_path / "s")
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "an entity-level run, but --teacher of a --task sentence student needs a sentence-level run" in bad.stderr


def test_export_and_distill_an_entity_run(entity_run, tmp_path):
    import shutil

    from finsent.apps.cli import main
    from finsent.data.entities import entity_input
    from finsent.inference.factory import PredictorOptions, build_predictor

    run = tmp_path / "teacher"
    shutil.copytree(entity_run, run)
    assert main(["export-onnx", "--model_dir", str(run)]) == 0
    export = read_json(run / "onnx" / "export.json")
    assert export  # int8 calibrated on the run's training pairs, checked against fp32
    fmt = EntityFormat.from_json(read_model_info(run).entity_input)
    texts = ["Tesla shares jump as Ford cuts guidance"] * 2
    pairs = [entity_input(t, e, fmt) for t, e in zip(texts, ["Tesla", "Ford"])]
    torch_probs = build_predictor(run, PredictorOptions(backend="torch")).score(pairs).probs
    int8_probs = build_predictor(run, PredictorOptions(backend="onnx")).score(pairs).probs
    assert torch_probs.shape == int8_probs.shape == (2, 3)
    assert abs(torch_probs - int8_probs).max() < 0.2  # the int8 export of the pairs stays near fp32
    student = tmp_path / "student"
    argv = ["distill", "--task", "entity", "--teacher", str(run), "--data_path", str(SENTFIN), str(FINENTITY)]
    argv += [
        "--output_dir",
        str(student),
        "--num_epochs",
        "1",
        "--max_train_samples",
        "200",
        "--max_eval_samples",
        "200",
    ]
    assert main([*argv, "--max_length", "64", "--use_lora"]) == 0
    results = read_json(student / "results.json")
    assert results["task"] == "entity" and results["teacher"]["run"] == str(run)
    assert results["distillation"]["unlabeled_counts"]["used"] == 0
    assert read_model_info(student).extra["cascade"]["threshold_sentences"] == results["n_val"]
