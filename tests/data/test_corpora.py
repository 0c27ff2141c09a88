"""Several corpora by name (issue 22): recognised by their files, split per source, de-duplicated across sources."""

from __future__ import annotations

import json
import re

import pytest

from conftest import DATA_ZIP, finsent_subprocess
from finsent.core.errors import FinsentError
from finsent.data import corpora
from finsent.data.corpus import corpus_rows, load_data
from finsent.data.splits import check_no_leakage, normalise, source_counts, split_data

DATA_DIR = DATA_ZIP.parent
NAMES = ["phrasebank", "twitter-financial-news", "sentfin", "finentity"]


@pytest.fixture(scope="module")
def everything():
    if not (DATA_DIR / "sentfin").is_dir():
        pytest.fail(f"the corpora are not in {DATA_DIR}; see its README")
    return load_data(
        [str(DATA_DIR / "FinancialPhraseBank-v1.0.zip"), *(str(corpora.find(n, DATA_DIR)) for n in NAMES[1:])]
    )


def test_each_corpus_is_found_by_name_and_recognised_by_its_files(monkeypatch):
    monkeypatch.setenv(corpora.DATA_ENV, str(DATA_DIR))
    for name in NAMES:
        data = load_data(name)
        assert data.source["name"] == name and set(data.sources) == {name}
        assert len(data) > 500 and set(data.labels) == {0, 1, 2}
        assert load_data(str(corpora.find(name))).texts == data.texts  # the path reads as the name does
    rows = {r["name"]: r for r in corpus_rows(DATA_DIR)}
    assert list(rows) == NAMES and all(r["found"] != "no" for r in rows.values())


def test_twitter_keeps_its_published_validation_split_as_test(monkeypatch):
    monkeypatch.setenv(corpora.DATA_ENV, str(DATA_DIR))
    data = load_data("twitter-financial-news")
    train, valid = corpora.read_corpus(
        corpora.BY_NAME["twitter-financial-news"], corpora.find("twitter-financial-news")
    )
    assert (len(train), len(valid)) == (9543, 2388)
    assert data.fixed.count("test") == data.source["official_test"] == len({t for t, _ in valid})
    splits = split_data(data, seed=3)
    assert sorted(splits.test.texts) == sorted(t for t, f in zip(data.texts, data.fixed) if f == "test")
    assert len(splits.val) == pytest.approx(0.1 * (len(data) - len(splits.test)), abs=2)


def test_headline_level_labels_only_where_every_entity_agrees(tmp_path):
    file = tmp_path / "SEntFiN-v1.0.csv"
    file.write_text(
        "S No.,Title,Decisions,Words\n"
        '1,Tesla up,"{""Tesla"": ""positive""}",2\n'
        '2,Tesla up as Ford cuts guidance,"{""Tesla"": ""positive"", ""Ford"": ""negative""}",6\n'
        '3,Infosys and TCS rally,"{""Infosys"": ""positive"", ""TCS"": ""positive""}",4\n',
        encoding="utf-8",
    )
    data = load_data(str(file))
    assert data.source["name"] == "sentfin" and data.texts == ["Tesla up", "Infosys and TCS rally"]


def test_splits_are_per_source_stratified_and_never_overlap(everything):
    splits = split_data(everything, seed=0)
    check_no_leakage(splits)
    keys = [{normalise(t) for t in part.texts} for part in (splits.train, splits.val, splits.test)]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    counts = source_counts(splits)
    assert set(counts) == set(NAMES)
    for name in ("phrasebank", "sentfin", "finentity"):  # 80/10/10 of each source
        c = counts[name]
        total = c["n_train"] + c["n_val"] + c["n_test"]
        assert c["n_test"] == pytest.approx(0.1 * total, abs=1) and c["n_val"] == pytest.approx(0.1 * total, abs=2)
    alone = split_data(load_data(DATA_ZIP), seed=0)  # PhraseBank's split inside the mix is the one it has alone
    assert [t for t, s in zip(splits.test.texts, splits.test.sources) if s == "phrasebank"] == alone.test.texts


def test_duplicates_are_removed_across_sources_and_conflicts_dropped(tmp_path):
    pb = load_data(DATA_ZIP)
    same, conflicting = pb.texts[0], pb.texts[1]
    other = tmp_path / "notes.csv"
    flipped = {0: "positive", 1: "negative", 2: "negative"}
    rows = [f'"{same.upper()}",{["negative", "neutral", "positive"][pb.labels[0]]}']
    rows += [
        f'"{conflicting}",{flipped[pb.labels[1]]}',
        '"A new sentence of our own",neutral',
        '"Another one",positive',
    ]
    other.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    both = load_data([str(DATA_ZIP), str(other)])
    assert both.source["format"] == "mix" and [s["name"] for s in both.source["sources"]] == ["phrasebank", "notes"]
    assert sum(normalise(t) == normalise(same) for t in both.texts) == 1  # kept once, in PhraseBank
    assert conflicting not in both.texts  # the sources disagree on its label
    assert len(both) == len(pb) - 1 + 2
    assert both.sources.count("notes") == 2


def test_a_mix_file_caps_and_weights_the_training_split(tmp_path):
    mix = tmp_path / "mix.yaml"
    mix.write_text(
        f"sources:\n  - path: {DATA_ZIP}\n    weight: 2\n  - path: {DATA_DIR / 'finentity'}\n    cap: 100\n",
        encoding="utf-8",
    )
    data = load_data(str(mix))
    plain = load_data([str(DATA_ZIP), str(DATA_DIR / "finentity")])
    assert data.texts == plain.texts
    assert data.source["mix"] == {"phrasebank": {"weight": 2}, "finentity": {"cap": 100}}
    splits, unweighted = split_data(data, seed=1), split_data(plain, seed=1)
    counts, before = source_counts(splits), source_counts(unweighted)
    assert (
        counts["finentity"]["n_train"] == 100 and counts["phrasebank"]["n_train"] == 2 * before["phrasebank"]["n_train"]
    )
    assert counts["phrasebank"]["n_test"] == before["phrasebank"]["n_test"]  # caps and weights touch train only
    assert splits.test.texts == unweighted.test.texts


@pytest.mark.slow  # a finsent subprocess each
@pytest.mark.parametrize(
    "args, expected",
    [
        (["--data_path", "no-such-corpus"], "no-such-corpus: no such file or folder, nor a corpus name"),
        (["--data_path", "{empty}/sentfin"], "a sentfin folder without SEntFiN-v1.0.csv"),
        (["--data_path", "{table}"], "no column 'label'"),
        (["--data_path", "{badmix}"], "source 1: unknown field 'weigth'"),
        (["--data_path", "{twitter_file}"], "one file of twitter-financial-news"),
    ],
)
def test_bad_data_is_one_line_and_exit_2(tmp_path, args, expected):
    (tmp_path / "sentfin").mkdir()
    table = tmp_path / "t.csv"
    table.write_text("text,sentiment\nProfit rose,positive\n", encoding="utf-8")
    badmix = tmp_path / "m.json"
    badmix.write_text(json.dumps({"sources": [{"name": "phrasebank", "weigth": 2}]}), encoding="utf-8")
    twitter_file = DATA_DIR / "twitter-financial-news" / "sent_train.csv"
    paths = {"empty": tmp_path, "table": table, "badmix": badmix, "twitter_file": twitter_file}
    argv = [a.format(**paths) for a in args]
    proc = finsent_subprocess("train", *argv, "--output_dir", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("finsent: error:") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_data_list_prints_every_corpus():
    proc = finsent_subprocess("data", "list", "--data_dir", str(DATA_DIR))
    assert proc.returncode == 0, proc.stderr
    for name in NAMES:
        assert name in proc.stdout
    assert "MIT" in proc.stdout and "CC BY-NC-SA 3.0" in proc.stdout


def test_unknown_source_given_twice_is_refused():
    with pytest.raises(FinsentError, match="given twice"):
        load_data([str(DATA_ZIP), str(DATA_ZIP)])


@pytest.fixture(scope="module")
def mix_run(tmp_path_factory):
    """A real short run on a small mix: at most 150 training sentences of each corpus, one epoch."""
    from finsent.apps.cli import main

    folder = tmp_path_factory.mktemp("mix")
    mix = folder / "mix.json"
    sources = [{"path": str(DATA_ZIP), "cap": 150}]
    sources += [
        {"path": str(DATA_DIR / name), "cap": 150} for name in ("twitter-financial-news", "sentfin", "finentity")
    ]
    mix.write_text(json.dumps({"sources": sources}), encoding="utf-8")
    out = folder / "run"
    argv = ["train", "--data_path", str(mix), "--output_dir", str(out), "--use_lora", "--num_epochs", "1"]
    argv += ["--max_eval_samples", "240", "--tracking_uri", f"sqlite:///{folder}/mlruns.db"]
    assert main(argv) == 0
    return out


@pytest.mark.slow
def test_a_run_on_the_mix_reports_every_source(mix_run):
    from finsent.core.serialization import read_json
    from finsent.runs.folder import read_log
    from finsent.training.tracking import run_metrics

    results = read_json(mix_run / "results.json")
    assert list(results["per_source"]) == sorted(results["per_source"], key=NAMES.index) or set(
        results["per_source"]
    ) == set(NAMES)
    assert set(results["per_source"]) == set(NAMES)
    log = read_log(mix_run)
    for name, part in results["per_source"].items():
        assert set(part) >= {"accuracy", "macro_f1", "ece", "n_train", "n_val", "n_test", "per_class"}
        assert part["n_train"] == 150
        rows = log[log["source"] == name]
        assert len(rows) == part["n_test"] > 0
        assert part["accuracy"] == pytest.approx(rows["is_correct"].mean())
    assert sum(p["n_test"] for p in results["per_source"].values()) == results["n_test"] == len(log)
    assert results["data"]["format"] == "mix" and len(results["data"]["sources"]) == 4
    tracked = run_metrics(results)
    assert tracked["accuracy_twitter-financial-news"] == results["per_source"]["twitter-financial-news"]["accuracy"]


@pytest.mark.slow
def test_evaluate_reports_per_source(mix_run, tmp_path, capsys):
    from finsent.apps.cli import main
    from finsent.core.serialization import read_json

    mix = mix_run.parent / "mix.json"
    assert main(["evaluate", "--model_dir", str(mix_run), "--data_path", str(mix), "--output_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    results = read_json(tmp_path / "results.json")
    for name in NAMES:
        assert f"  {name}: accuracy {results['per_source'][name]['accuracy']:.4f}" in out


def test_official_test_rows_win_over_train_copies_and_conflicts_leave_both(tmp_path):
    folder = tmp_path / "twitter-financial-news"
    folder.mkdir()
    train = ["$A up on earnings,1", "$B guidance cut,0", "$C flat,2", "$D beats,1", "$E misses,0", "$F holds,2"]
    (folder / "sent_train.csv").write_text("text,label\n" + "\n".join(train) + "\n", encoding="utf-8")
    valid = ["$A UP ON EARNINGS,1", "$C flat,0", "$G new high,1"]  # a copy (other case) and a conflict
    (folder / "sent_valid.csv").write_text("text,label\n" + "\n".join(valid) + "\n", encoding="utf-8")
    data = load_data(str(folder))
    tests = [t for t, f in zip(data.texts, data.fixed) if f == "test"]
    assert tests == ["$A UP ON EARNINGS", "$G new high"]  # the official copy stays, in test only
    assert "$A up on earnings" not in data.texts and not any(t.lower() == "$c flat" for t in data.texts)
    assert len(data) == 2 + 4 and data.source["official_test"] == 2
    assert (data.source["duplicates_removed"], data.source["conflicts_removed"]) == (1, 1)


@pytest.mark.parametrize(
    "entry, expected",
    [
        ({"name": "phrasebank", "cap": True}, "cap True must be a positive number"),
        ({"name": "phrasebank", "weight": 0}, "weight 0 must be a positive number"),
        ({"name": "phrasebank", "agreement": "90"}, "agreement '90'; expected one of"),
        ({"cap": 3}, "needs a 'name' (a corpus) or a 'path'"),
    ],
)
def test_a_bad_mix_entry_is_named(tmp_path, entry, expected):
    mix = tmp_path / "mix.json"
    mix.write_text(json.dumps({"sources": [entry]}), encoding="utf-8")
    with pytest.raises(FinsentError, match=re.escape(expected)):
        load_data(str(mix))


def test_mix_paths_are_relative_to_the_mix_file(tmp_path):
    (tmp_path / "sub").mkdir()
    table = tmp_path / "sub" / "my.notes.csv"
    table.write_text("text,label\nProfit rose,positive\nSales fell,negative\nFlat year,neutral\n", encoding="utf-8")
    mix = tmp_path / "sub" / "mix.yaml"
    mix.write_text("sources:\n  - path: my.notes.csv\n    cap: 2\n", encoding="utf-8")
    data = load_data(str(mix))
    assert data.source["name"] == "my.notes" and len(data) == 3  # one source: its own name, the file's stem
