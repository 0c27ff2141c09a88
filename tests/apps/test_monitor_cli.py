"""`finsent monitor` end to end on a real short run: real PhraseBank sentences it never saw against real finance
tweets, through `finsent predict` outputs and serve's prediction-log format; --fail_on exit codes; the HTML page and
the dashboard's Production tab in Chromium."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import finsent_subprocess
from finsent.apps.cli import main

TWEETS = Path(__file__).resolve().parents[3] / "shared" / "data" / "twitter-financial-news" / "sent_valid.csv"
TWEET_LABELS = {"0": "negative", "1": "positive", "2": "neutral"}


def write_table(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def feeds(lora_run, tmp_path_factory, phrasebank_zip) -> dict[str, Path]:
    """predict outputs (with true labels) of 300 unseen PhraseBank sentences and of 300 tweets."""
    from finsent.core.serialization import read_json
    from finsent.core.text import sentence_hash
    from finsent.data.corpus import load_data
    from finsent.data.splits import split_data

    work = tmp_path_factory.mktemp("monitor")
    seen = set(read_json(lora_run / "sentences.json")["train"])
    splits = split_data(load_data(str(phrasebank_zip), "all"), read_json(lora_run / "results.json")["data"]["seed"])
    unseen = [
        (t, ["negative", "neutral", "positive"][y])
        for t, y in zip(splits.train.texts, splits.train.labels)
        if sentence_hash(t) not in seen
    ]
    unseen = [
        unseen[i] for i in np.random.default_rng(0).choice(len(unseen), 300, replace=False)
    ]  # split order: by file
    with open(TWEETS, encoding="utf-8") as f:
        tweets = [(r["text"], TWEET_LABELS[r["label"]]) for r in csv.DictReader(f)][:300]
    out = {}
    for name, rows in (("phrasebank", unseen), ("tweets", tweets)):
        table = write_table(work / f"{name}.csv", rows)
        out[name] = work / f"{name}_scored.csv"
        assert (
            main(
                ["predict", "--model_dir", str(lora_run), "--input", str(table), "--output", str(out[name]), "--quiet"]
            )
            == 0
        )
    out["work"] = work
    return out


def run_monitor(run: Path, out: Path, *inputs: Path, extra=()) -> tuple[int, dict]:
    code = main(
        [
            "monitor",
            "--model_dir",
            str(run),
            "--predictions",
            *map(str, inputs),
            "--window",
            "300",
            "--output",
            str(out),
            *extra,
        ]
    )
    return code, json.loads(out.with_suffix(".json").read_text())


def test_in_domain_sentences_do_not_drift_and_tweets_do(lora_run, feeds):
    work = feeds["work"]
    code, report = run_monitor(
        lora_run, work / "both.json", feeds["phrasebank"], feeds["tweets"], extra=["--fail_on", "drift"]
    )
    assert code == 3
    pb, tweets = report["windows"]
    assert (pb["n"], tweets["n"]) == (300, 300)
    assert not pb["drift"], pb["drifting_tests"]
    assert tweets["drift"] and tweets["top_terms"] and tweets["examples"]
    for w in (pb, tweets):
        lo, hi = w["estimated_accuracy_ci"]
        assert 0 < lo <= w["estimated_accuracy"] <= hi <= 1 and w["accuracy"] is not None and w["n_labelled"] == 300
        assert set(w["tests"]) >= {
            "label_shares",
            "confidence_psi",
            "confidence_ks",
            "margin_ks",
            "text_length_ks",
            "novelty",
        }
    assert tweets["novelty_share"] > pb["novelty_share"]
    assert tweets["accuracy"] < pb["accuracy"]
    ref = report["reference"]
    assert ref["test_accuracy"] == json.loads((lora_run / "results.json").read_text())["accuracy"]
    assert ref["novelty_threshold"] > 0 and report["summary"]["first_drifting_window"] == 1
    assert (lora_run / "monitor_reference.npz").is_file()  # the embeddings are cached for the next call


def test_fail_on_exit_codes(lora_run, feeds):
    work = feeds["work"]
    assert run_monitor(lora_run, work / "pb.json", feeds["phrasebank"], extra=["--fail_on", "drift"])[0] == 0
    code, report = run_monitor(
        lora_run, work / "pb.json", feeds["phrasebank"], extra=["--fail_on", "accuracy_below=0.999"]
    )
    assert code == 3 and report["windows"][0]["estimated_accuracy"] < 0.999
    done = finsent_subprocess(
        "monitor",
        "--model_dir",
        str(lora_run),
        "--predictions",
        str(feeds["tweets"]),
        "--no_novelty",
        "--fail_on",
        "drift",
        "--output",
        str(work / "t.json"),
    )
    assert done.returncode == 3 and "drift in 1 of 1 windows" in done.stderr and "Traceback" not in done.stderr


def test_bad_inputs_are_one_line(lora_run, feeds, tmp_path):
    plain = write_table(tmp_path / "plain.csv", [("Profit rose.", "positive")])
    for argv, message in (
        (["--predictions", str(plain)], "no prediction columns"),
        (["--predictions", str(tmp_path / "missing.csv")], "no such file or folder"),
        (["--predictions", str(feeds["tweets"]), "--window", "1 fortnight"], "--window"),
        (["--predictions", str(feeds["tweets"]), "--window", "1h"], "--time_column"),
    ):
        done = finsent_subprocess("monitor", "--model_dir", str(lora_run), "--no_novelty", *argv)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_prediction_log_folder_in_time_windows(lora_run, feeds):
    """serve's log format (written by PredictionLog itself) read by monitor, in hourly windows."""
    import pandas as pd

    from finsent.monitoring.predlog import PredictionLog

    scored = pd.read_csv(feeds["tweets"])
    folder = feeds["work"] / "log"
    log = PredictionLog(folder, model_version="v1", backend="torch", labels=("negative", "neutral", "positive"))
    log.start()
    preds = [
        {
            "label": r.pred_label,
            "confidence": r.pred_confidence,
            "probabilities": {k: getattr(r, f"pred_prob_{k}") for k in ("negative", "neutral", "positive")},
        }
        for r in scored.itertuples()
    ]
    log.record(scored["text"].tolist(), preds, 3.0, "/predict")
    log.close()
    code, report = run_monitor(lora_run, feeds["work"] / "log.json", folder, extra=["--window", "1h", "--no_novelty"])
    assert code == 0 and sum(w["n"] for w in report["windows"]) == 300
    assert all(w["accuracy"] is None for w in report["windows"])  # a log holds no true labels
    assert report["windows"][0]["start"].endswith("+00:00")
    other = feeds["work"] / "log-v9"
    log = PredictionLog(other, model_version="v9", backend="torch", labels=("negative", "neutral", "positive"))
    log.start()
    log.record(scored["text"].tolist()[:5], preds[:5], 3.0, "/predict")
    log.close()
    done = finsent_subprocess("monitor", "--model_dir", str(lora_run), "--predictions", str(other), "--no_novelty")
    assert done.returncode == 2 and "model version v9, not v1" in done.stderr and "Traceback" not in done.stderr


def test_html_page_and_the_production_tab(lora_run, feeds, browser):
    work = feeds["work"]
    code, _ = run_monitor(lora_run, work / "page.html", feeds["phrasebank"], feeds["tweets"], extra=["--no_novelty"])
    assert code == 0 and (work / "page.html").is_file() and (work / "page.json").is_file()
    assert (
        main(
            ["dashboard", "--runs", str(lora_run), "--monitor", str(work / "page.json"), "--out", str(work / "d.html")]
        )
        == 0
    )
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((work / "d.html").as_uri())
    page.click("button[data-tab=production]")
    assert page.is_visible("#production-0")
    assert page.locator("#production-0 table.windows tbody tr").count() == 2
    assert page.locator("#production-0 tr.drift").count() == 1
    assert page.locator("#production-accuracy-0 .main-svg").count() > 0
    standalone = browser.new_page()
    standalone.goto((work / "page.html").as_uri())
    assert standalone.locator("#production-shift-0 .main-svg").count() > 0
    assert errors == []


def test_a_score_output_folder_is_a_monitor_input(lora_run, feeds):
    """finsent score's Parquet dataset, as it is, gives the window predict's CSV gives."""
    work = feeds["work"]
    scored = work / "scored"
    assert (
        main(
            [
                "score",
                "--model_dir",
                str(lora_run),
                "--input",
                str(work / "tweets.csv"),
                "--output",
                str(scored),
                "--quiet",
            ]
        )
        == 0
    )
    _, from_score = run_monitor(lora_run, work / "score.json", scored, extra=["--no_novelty"])
    _, from_predict = run_monitor(lora_run, work / "predict.json", feeds["tweets"], extra=["--no_novelty"])
    a, b = from_score["windows"][0], from_predict["windows"][0]
    assert a["n"] == b["n"] == 300 and a["accuracy"] == b["accuracy"]
    assert a["estimated_accuracy"] == pytest.approx(b["estimated_accuracy"], abs=1e-4)
    assert from_score["inputs"][str(scored)]["scored"] == 300
