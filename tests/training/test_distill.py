"""Distillation: a tiny real teacher -> `finsent distill` -> a complete student run; the leakage guard; the cascade."""

import json
import shutil

import numpy as np
import pytest

from finsent.apps.cli import main
from finsent.core.errors import FinsentError
from finsent.core.text import sentence_hash
from finsent.data.corpus import load_data
from finsent.data.labels import LABELS
from finsent.data.splits import LabelledData, Splits, split_data
from finsent.runs.folder import read_model_info, read_results, read_sentences, read_teacher_logits, write_sentences
from finsent.training.distill import DistillConfig, cascade_threshold, check_teacher_split, kd_loss

TINY = ["--max_train_samples", "200", "--max_eval_samples", "60", "--num_epochs", "1", "--max_length", "64"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, phrasebank_zip):
    out = tmp_path_factory.mktemp("distill") / "teacher"
    assert (
        main(
            [
                "train",
                "--data_path",
                str(phrasebank_zip),
                "--output_dir",
                str(out),
                "--use_lora",
                "--seed",
                "3",
                "--version",
                "t1",
                *TINY,
            ]
        )
        == 0
    )
    return out


@pytest.mark.slow
def test_distill_writes_a_complete_student_run_and_reuses_the_teacher_cache(teacher, phrasebank_zip, tmp_path, capsys):
    student = tmp_path / "student"
    test_sentence = split_data(load_data(phrasebank_zip, "all"), 3).test.texts[0]
    own = tmp_path / "news.txt"  # a user's unlabeled sentences: a test sentence among them is left out
    own.write_text(f"Shares of Acme rose 4 % on Monday .\n{test_sentence}\n\nAcme cut 200 jobs .\n", encoding="utf-8")
    argv = [
        "distill",
        "--unlabeled",
        str(own),
        "--teacher",
        str(teacher),
        "--data_path",
        str(phrasebank_zip),
        "--output_dir",
        str(student),
        "--use_lora",
        "--seed",
        "3",
        "--max_unlabeled",
        "100",
        *TINY,
    ]
    assert main(argv) == 0
    results = read_results(student)
    assert results["teacher"]["run"] == str(teacher) and results["teacher"]["version"] == "t1"
    assert results["distillation"]["alpha"] == 0.5 and results["distillation"]["unlabeled_counts"]["used"] == 100
    assert results["distillation"]["unlabeled_counts"]["file"] == 2
    assert 0 <= results["accuracy"] <= 1 and len(read_teacher_logits(teacher, _digest(teacher))) >= 300
    cascade = read_model_info(student).extra["cascade"]
    assert cascade["val_agreement"] >= 0.995 and 0 <= cascade["val_deferred"] <= 1
    # the artifact contract holds: predict reads the student; the cascade adds which model answered, in input order
    capsys.readouterr()
    texts = ["Operating profit rose to EUR 13.1 mn from EUR 8.7 mn .", "Sales fell sharply .", "The board met ."]
    assert (
        main(["predict", "--model_dir", str(student), "--cascade", str(teacher), "--cascade_threshold", "2", *texts])
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == texts and {r["answered_by"] for r in rows} == {"t1"}
    assert set(rows[0]) == {"text", "label", "confidence", *(f"prob_{n}" for n in LABELS), "truncated", "answered_by"}
    assert (
        main(["predict", "--model_dir", str(student), "--cascade", str(teacher), "--cascade_threshold", "0", *texts])
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["answered_by"] for r in rows} == {read_model_info(student).version}


@pytest.mark.slow
def test_early_exit_is_a_shallow_student_of_the_full_run(teacher, phrasebank_zip, tmp_path, capsys):
    from finsent.core.metrics import margins
    from finsent.inference.predictor import Predictor
    from finsent.models.loading import load_trained

    exit_dir = teacher / "early_exit"  # where `predict --early_exit` looks by default
    argv = ["distill", "--teacher", str(teacher), "--num_layers", "1", "--data_path", str(phrasebank_zip)]
    argv += ["--output_dir", str(exit_dir), "--seed", "3", "--max_unlabeled", "100", "--threshold_sentences", "30"]
    assert main([*argv, *TINY]) == 0
    assert read_model_info(exit_dir).num_layers == 1
    # the threshold is chosen on validation plus 30 unlabeled sentences held out of training
    assert read_model_info(exit_dir).extra["cascade"]["threshold_sentences"] == 60 + 30
    assert len(read_sentences(exit_dir)["threshold"]) == 30
    counts = read_results(exit_dir)["distillation"]["unlabeled_counts"]
    assert counts["threshold"] == 30 and counts["used"] == 70
    model, _ = load_trained(exit_dir)
    assert model.config.num_hidden_layers == 1 and len(model.bert.encoder.layer) == 1
    texts = split_data(load_data(phrasebank_zip, "all"), 3).test.texts[:24]
    full, shallow = Predictor(teacher).score(texts).probs, Predictor(exit_dir).score(texts).probs
    threshold = read_model_info(exit_dir).extra["cascade"]["margin_threshold"]
    capsys.readouterr()

    def early_exit(*flags):
        assert main(["predict", "--model_dir", str(teacher), "--early_exit", *flags, *texts]) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    # each sentence is answered by the exit where its margin clears the threshold, else by the full model
    exits = margins(shallow) >= threshold
    rows = early_exit()
    assert [r["answered_by"] for r in rows] == ["early_exit" if e else "full" for e in exits]
    expected = np.where(exits[:, None], shallow, full).argmax(1)
    assert [r["label"] for r in rows] == [LABELS[i] for i in expected]
    assert {r["answered_by"] for r in early_exit("--cascade_threshold", "0")} == {"early_exit"}
    rows = early_exit("--cascade_threshold", "2")
    assert [r["label"] for r in rows] == [LABELS[i] for i in full.argmax(1)]
    # an exit distilled from another run is refused, and so is a run without one: one line each, exit 2
    other = tmp_path / "other"
    shutil.copytree(teacher, other, ignore=shutil.ignore_patterns("early_exit"))
    for argv in (["--early_exit_dir", str(exit_dir)], ["--early_exit"]):
        assert main(["predict", "--model_dir", str(other), *argv, "Sales rose ."]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"finsent distill --teacher {other} --num_layers" in err


def _digest(run):
    from finsent.runs.folder import weights_digest

    return weights_digest(run)


@pytest.mark.slow
def test_distill_refuses_a_teacher_that_trained_on_the_students_test_split(teacher, phrasebank_zip, tmp_path, capsys):
    # the teacher is AllAgree seed 3; a 50Agree student of seed 3 has AllAgree training sentences in its test split
    argv = [
        "distill",
        "--teacher",
        str(teacher),
        "--data_path",
        str(phrasebank_zip),
        "--agreement",
        "50",
        "--output_dir",
        str(tmp_path / "s"),
        "--seed",
        "3",
        *TINY,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train the teacher on the student's split" in err and "Traceback" not in err
    assert not (tmp_path / "s" / "results.json").exists()


def _splits(train, val, test):
    part = lambda texts: LabelledData(texts, [1] * len(texts))  # noqa: E731
    return Splits(part(train), part(val), part(test))


def test_leakage_guard_counts_overlaps_and_allows_the_same_split(tmp_path):
    write_sentences(
        tmp_path,
        {"train": [sentence_hash("a"), sentence_hash("b")], "val": [sentence_hash("c")], "test": [sentence_hash("d")]},
    )
    check_teacher_split(tmp_path, _splits(["a", "b"], ["c"], ["d"]))  # the student's own split: fine
    with pytest.raises(FinsentError, match="trained on 1 of .* chose its epoch on 1"):
        check_teacher_split(tmp_path, _splits(["x"], ["a"], ["c"]))
    with pytest.raises(FinsentError, match="no sentences.json"):
        check_teacher_split(tmp_path / "missing", _splits(["x"], ["y"], ["z"]))


def test_kd_loss_is_the_weighted_sum_and_ignores_unlabelled_rows_in_the_gold_term():
    import torch
    import torch.nn.functional as F

    student = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    teacher = torch.tensor([[1.0, 0.5, 0.0], [0.0, 3.0, 0.0]])
    labels = torch.tensor([0, -100])
    loss = kd_loss(student, labels, teacher, alpha=0.3, temperature=2.0)
    ce = F.cross_entropy(student[:1], labels[:1])
    p_t = F.softmax(teacher / 2, -1)
    kl = (p_t * (p_t.log() - F.log_softmax(student / 2, -1))).sum(-1).mean() * 4
    assert torch.isclose(loss, 0.3 * ce + 0.7 * kl, atol=1e-6)
    assert torch.isclose(kd_loss(student, labels, None, 0.3, 2.0), ce)


def test_cascade_threshold_is_the_smallest_margin_that_reaches_the_agreement():
    probs = np.array([[0.9, 0.05, 0.05], [0.5, 0.4, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]])
    teacher = np.array([0, 1, 1, 2])  # the student disagrees on rows 1 (margin 0.1) and 2 (margin 0.05)
    choice = cascade_threshold(probs, teacher, 1.0)
    assert choice["val_agreement"] == 1.0 and choice["val_deferred"] == 0.5
    assert 0.1 < choice["margin_threshold"] <= 0.1 + 1e-6
    assert cascade_threshold(probs, teacher, 0.75)["val_deferred"] == 0.25


def test_distill_config_validates_itself():
    with pytest.raises(FinsentError, match="--alpha"):
        DistillConfig(teacher="t", alpha=1.5)
    with pytest.raises(FinsentError, match="--threshold_sentences"):
        DistillConfig(teacher="t", threshold_sentences=-1)
    with pytest.raises(FinsentError, match="--distill_temperature"):
        DistillConfig(teacher="t", distill_temperature=0)
