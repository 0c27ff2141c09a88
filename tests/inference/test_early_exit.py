"""Early exits trained with the student: `finsent distill --exit_layers` -> thresholds on validation -> segments that
let confident sentences out, in PyTorch and exported to ONNX, through predict's one scoring path."""

import json

import numpy as np
import pytest
import torch

from finsent.apps.cli import main
from finsent.core.errors import FinsentError
from finsent.core.metrics import margins, softmax
from finsent.data.corpus import load_data
from finsent.data.labels import LABELS
from finsent.data.splits import split_data
from finsent.inference.early_exit import choose_thresholds, exit_logits, route
from finsent.inference.predictor import Predictor
from finsent.models.exits import EXITS_FILE, MultiExitModel, load_exits, segment_files
from finsent.runs.folder import read_model_info
from finsent.training.distill import DistillConfig, exits_kd_loss, kd_loss

TINY = ["--max_train_samples", "200", "--max_eval_samples", "60", "--num_epochs", "1", "--max_length", "64"]


def test_thresholds_hold_the_agreement_exit_by_exit():
    final = np.array([0, 0, 1, 2, 1, 0])
    first = np.array(  # margins 0.8, 0.6, 0.4 (disagrees), 0.2, 0.1, 0.05
        [[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.7, 0.3, 0.0], [0.2, 0.0, 0.8 - 0.4], [0.3, 0.4, 0.3], [0.35, 0.3, 0.35]]
    )
    first[3] = [0.2, 0.2, 0.6]  # margin 0.4 as well, agrees
    second = np.array([[1, 0, 0]] * 2 + [[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.45, 0.55, 0.0], [0.9, 0.1, 0.0]])
    t1, t2 = choose_thresholds([first, second], final, 1.0)
    assert np.isclose(t1, 0.6)  # the disagreeing sentence at margin 0.4 must stay in
    # the second exit sees only the sentences still in: rows 2-5, all of which it gets right down to margin 0.1
    assert np.isclose(t2, 0.1)
    out = margins(first) >= t1
    assert out.tolist() == [True, True, False, False, False, False]
    assert route([first, second], [t1, t2]).tolist() == [0, 0, 1, 1, 1, 1]  # the earliest confident exit answers
    assert route([first, second], [t1, 0.5]).tolist() == [0, 0, 1, 1, 2, 1]  # row 4 (margin 0.1): the final layer
    assert choose_thresholds([first], final, 0.5)[0] <= 0.4  # a looser target lets the disagreeing one out too
    never = choose_thresholds([np.array([[0.5, 0.5, 0.0]])], np.array([2]), 0.99)
    assert never[0] > 1  # no margin works: nothing leaves at that exit


def test_exit_loss_adds_each_exit_learning_from_teacher_and_final_layer():
    import torch.nn.functional as F

    final = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], requires_grad=True)
    exits = [torch.tensor([[0.5, 0.2, 0.1], [0.1, 0.3, 0.0]], requires_grad=True)]
    teacher, labels = torch.tensor([[1.0, 0.5, 0.0], [0.0, 3.0, 0.0]]), torch.tensor([0, -100])
    loss = exits_kd_loss(final, exits, labels, teacher, 0.5, 2.0)
    p_f = F.softmax(final.detach() / 2, -1)
    follow = (p_f * (p_f.log() - F.log_softmax(exits[0] / 2, -1))).sum(-1).mean() * 4
    expected = (
        kd_loss(final, labels, teacher, 0.5, 2.0) + 0.5 * kd_loss(exits[0], labels, teacher, 0.5, 2.0) + 0.5 * follow
    )
    assert torch.isclose(loss, expected, atol=1e-6)
    only_final = exits_kd_loss(final, exits, labels, teacher, 0.5, 2.0, follow=1.0)  # --exit_follow 1
    assert torch.isclose(only_final, kd_loss(final, labels, teacher, 0.5, 2.0) + follow, atol=1e-6)
    loss.backward()  # the final layer is not pulled towards its exits: its gradient is its own loss's alone
    alone = final.detach().clone().requires_grad_()
    kd_loss(alone, labels, teacher, 0.5, 2.0).backward()
    assert torch.allclose(final.grad, alone.grad, atol=1e-6) and exits[0].grad.abs().sum() > 0


def test_exit_layers_are_checked_before_training():
    for bad in ([], [3, 1], [0, 2], [2, 2]):
        with pytest.raises(FinsentError, match="--exit_layers"):
            DistillConfig(teacher="t", exit_layers=bad)
    assert DistillConfig(teacher="t", exit_layers=[1, 3]).exit_layers == [1, 3]
    with pytest.raises(FinsentError, match="--exit_follow"):
        DistillConfig(teacher="t", exit_layers=[1], exit_follow=1.5)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, phrasebank_zip):
    out = tmp_path_factory.mktemp("exits") / "teacher"
    argv = ["train", "--data_path", str(phrasebank_zip), "--output_dir", str(out), "--use_lora", "--seed", "3"]
    assert main([*argv, "--version", "t1", *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def student(teacher, phrasebank_zip):
    out = teacher.parent / "student"
    argv = ["distill", "--teacher", str(teacher), "--exit_layers", "1", "3", "--data_path", str(phrasebank_zip)]
    argv += ["--output_dir", str(out), "--seed", "3", "--max_unlabeled", "100", "--threshold_sentences", "30"]
    assert main([*argv, "--use_lora", *TINY]) == 0
    return out


@pytest.mark.slow
def test_distill_with_exits_stores_heads_and_thresholds_that_hold_on_validation(student, phrasebank_zip):
    spec = read_model_info(student).extra["exits"]
    assert spec["layers"] == [1, 3] and spec["num_layers"] == 6 and len(spec["thresholds"]) == 2
    assert spec["threshold_sentences"] == 60 + 30 and spec["val_agreement"] >= spec["agreement_target"] == 0.995
    assert (student / EXITS_FILE).is_file() and load_exits(student).layers == [1, 3]
    # the heads as trained (the whole model with hidden states) = the heads as served (the model cut into segments)
    texts = split_data(load_data(phrasebank_zip, "all"), 3).test.texts[:40]
    from finsent.models.loading import load_trained

    model, tokenizer = load_trained(student)
    feeds = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        whole = MultiExitModel(model, load_exits(student)).eval()(feeds["input_ids"], feeds["attention_mask"])
    *exits, final = exit_logits(student, texts)
    for a, b in zip(exits, whole["exit_logits"]):
        assert np.allclose(a, b.numpy(), atol=1e-4)
    assert np.allclose(final, whole["logits"].numpy(), atol=1e-4)
    assert np.allclose(final, Predictor(student).logits(texts)[0], atol=1e-4)


def _expected(student, texts, thresholds):
    """Labels and answering layer per text, from every exit's logits: the first exit whose margin clears its threshold."""
    *exits, final = exit_logits(student, texts)
    layers = read_model_info(student).extra["exits"]["layers"]
    labels, answered = final.argmax(1), np.array(["full"] * len(texts), dtype=object)
    left = np.ones(len(texts), dtype=bool)
    for k, logits, t in zip(layers, exits, thresholds):
        go = left & (margins(softmax(logits)) >= t)
        labels[go], answered[go] = logits.argmax(1)[go], f"layer {k}"
        left &= ~go
    return [LABELS[i] for i in labels], answered.tolist()


@pytest.mark.slow
def test_predict_early_exit_answers_each_sentence_at_its_first_confident_exit(student, phrasebank_zip, capsys):
    texts = load_data(phrasebank_zip, "50").texts[:48]
    thresholds = read_model_info(student).extra["exits"]["thresholds"]
    capsys.readouterr()
    assert main(["predict", "--model_dir", str(student), "--early_exit", *texts]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    labels, answered = _expected(student, texts, thresholds)
    assert [r["text"] for r in rows] == texts
    assert [r["label"] for r in rows] == labels and [r["answered_by"] for r in rows] == answered
    # forced thresholds route every sentence through one place: the first exit, or the full model
    predictor = Predictor(student, early_exit=True)
    for forced, where in (([0.0, 0.0], "layer 1"), ([2.0, 2.0], "full"), ([2.0, 0.0], "layer 3")):
        predictor.backend.thresholds = forced
        scores = predictor.score(texts)
        assert set(scores.answered_by) == {where}
        assert [LABELS[i] for i in scores.probs.argmax(1)] == _expected(student, texts, forced)[0]
    empty = predictor.score([])  # nothing in, nothing out (the tokenizer itself fails on an empty batch)
    assert empty.probs.shape == (0, len(LABELS)) and empty.answered_by == []
    meta = predictor.metadata()
    assert meta["backend"] == "early_exit(torch)" and meta["early_exit"]["exit_layers"] == [1, 3]
    assert meta["early_exit"]["answered_shares"]["layer 1"] > 0
    # exits have their own thresholds: an explicit one is refused in one line
    assert main(["predict", "--model_dir", str(student), "--early_exit", "--cascade_threshold", "0.5", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--cascade_threshold" in err


@pytest.fixture(scope="module")
def exported(student):
    assert main(["export-onnx", "--model_dir", str(student)]) == 0
    return student


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_exported_segments_answer_like_pytorch(exported, phrasebank_zip, runtime):
    student = exported
    export = json.loads((student / "onnx" / "export.json").read_text())
    assert export["early_exit_segments"]["layers"] == [1, 3]
    assert export["early_exit_segments"]["fp32_max_abs_diff"] <= 1e-3
    texts = load_data(phrasebank_zip, "50").texts[:200]
    torch_scores = Predictor(student, early_exit=True).score(texts)
    fp32 = Predictor(student, "onnx", early_exit=True, onnx_file="model.onnx", onnx_runtime=runtime).score(texts)
    assert fp32.answered_by == torch_scores.answered_by
    assert np.allclose(fp32.probs, torch_scores.probs, atol=1e-4)
    int8 = Predictor(student, "onnx", early_exit=True, onnx_runtime=runtime)
    scores = int8.score(texts)
    assert int8.backend_name == f"early_exit(onnx {runtime})"
    assert np.mean(scores.probs.argmax(1) == torch_scores.probs.argmax(1)) >= 0.95
    assert set(scores.answered_by) <= {"layer 1", "layer 3", "full"}


@pytest.mark.slow
def test_an_export_without_segments_and_a_run_without_exits_are_one_line(exported, teacher, tmp_path, capsys):
    import shutil

    copy = tmp_path / "student"
    shutil.copytree(exported, copy)
    for name in segment_files(2, int8=True) + segment_files(2, int8=False):  # the tuned engine may run either
        (copy / "onnx" / name).unlink()
    assert main(["predict", "--model_dir", str(copy), "--backend", "onnx", "--early_exit", "Sales rose ."]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "finsent export-onnx" in err
    # a run with neither exits nor an early-exit student says how to get either
    assert main(["predict", "--model_dir", str(teacher), "--early_exit", "Sales rose ."]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "finsent distill" in err


@pytest.mark.slow
def test_serve_early_exit_says_which_layer_answered(exported, phrasebank_zip, tmp_path):
    import httpx

    from servers import start_server, stop_server

    texts = load_data(phrasebank_zip, "50").texts[:40]
    expected = Predictor(exported, "onnx", early_exit=True).score(texts)
    proc, url = start_server(exported, tmp_path / "serve.log", "--backend", "onnx", "--early_exit")
    try:
        body = httpx.post(url + "/predict", json={"texts": texts}, timeout=60).json()
        meta = httpx.get(url + "/metadata", timeout=10).json()
    finally:
        stop_server(proc, tmp_path / "serve.log")
    assert body["backend"] == "early_exit(onnx openvino)"
    assert [p["answered_by"] for p in body["predictions"]] == expected.answered_by
    assert [p["label"] for p in body["predictions"]] == [LABELS[i] for i in expected.probs.argmax(1)]
    assert meta["early_exit"]["exit_layers"] == [1, 3] and sum(meta["early_exit"]["answered_shares"].values()) <= 1
