"""Distillation: a tiny real teacher -> `finsent distill` -> a complete student run; the leakage guard; the cascade."""

import json

import numpy as np
import pytest

from finsent.cli import main
from finsent.data import LABELS, LabelledData, Splits, load_data, split_data
from finsent.distill import DistillConfig, cascade_threshold, check_teacher_split, kd_loss, sentence_hash
from finsent.errors import FinsentError
from finsent.runs import read_model_info, read_results, read_teacher_logits, write_sentences

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


def _digest(run):
    from finsent.inference import weights_digest

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
    with pytest.raises(FinsentError, match="--distill_temperature"):
        DistillConfig(teacher="t", distill_temperature=0)
