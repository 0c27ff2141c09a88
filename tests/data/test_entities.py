"""Entity-level data (issue 23): (text, entity) pairs from SEntFiN and FinEntity, split by text, and the one input format."""

from __future__ import annotations

import json

import pytest

from conftest import DATA_ZIP, finsent_subprocess
from finsent.core.errors import FinsentError
from finsent.core.metrics import mixed_accuracy
from finsent.data.corpus import load_entity_data
from finsent.data.entities import CLOSE, OPEN, EntityFormat, entity_input, mention_spans
from finsent.data.splits import check_no_leakage, normalise, split_data

DATA_DIR = DATA_ZIP.parent


@pytest.fixture(scope="module")
def pairs():
    if not (DATA_DIR / "sentfin").is_dir():
        pytest.fail(f"the entity corpora are not in {DATA_DIR}; see its README")
    return load_entity_data([str(DATA_DIR / "sentfin"), str(DATA_DIR / "finentity")])


def test_markers_wrap_every_mention_on_word_boundaries_and_name_an_absent_entity_in_front():
    text = "Ford cuts guidance; Fordham gains, FORD falls"
    assert mention_spans(text, "Ford") == [(0, 4), (35, 39)]
    assert entity_input(text, "Ford") == f"{OPEN}Ford{CLOSE} cuts guidance; Fordham gains, {OPEN}FORD{CLOSE} falls"
    assert entity_input("Tesla jumps", "Ford") == f"{OPEN}Ford{CLOSE} | Tesla jumps"
    assert entity_input("Tesla jumps", "Tesla", spans=[]) == f"{OPEN}Tesla{CLOSE} | Tesla jumps"
    assert entity_input("Tesla jumps", "Tesla", EntityFormat("pair", "</s>")) == "Tesla jumps </s> Tesla"
    assert EntityFormat.from_json(EntityFormat("pair", "[SEP]").to_json()) == EntityFormat("pair", "[SEP]")
    with pytest.raises(FinsentError, match="expected one of markers, pair"):
        EntityFormat("brackets")


def test_both_corpora_give_one_row_per_labelled_entity(pairs):
    names = pairs.source_names
    assert names == ["sentfin", "finentity"]
    sentfin = pairs.sources.count("sentfin")
    # SEntFiN has 14,409 entity labels; repeated headlines and conflicting repeats are dropped, nothing else
    assert 14_000 < sentfin <= 14_409
    assert 1_900 < pairs.sources.count("finentity") <= 2_131
    assert all(e.strip() for e in pairs.entities) and set(pairs.labels) == {0, 1, 2}
    keys = list(zip(map(normalise, pairs.texts), map(normalise, pairs.entities)))
    assert len(keys) == len(set(keys))  # a pair once
    # the texts whose entities disagree are there: the rows a sentence-level label gets half wrong
    _, n_mixed = mixed_accuracy(pairs.texts, pairs.entities, pairs.labels, pairs.labels)
    assert n_mixed > 2_000


def test_split_is_by_text_per_source_stratified_and_seeded(pairs):
    splits = split_data(pairs, seed=0)
    check_no_leakage(splits)  # no text in two splits (the same text up to case and whitespace)
    parts = {name: {normalise(t) for t in part.texts} for name, part in vars(splits).items()}
    assert not (parts["train"] & parts["val"]) and not (parts["train"] | parts["val"]) & parts["test"]
    for name in ("sentfin", "finentity"):
        n_test, n_all = splits.test.sources.count(name), pairs.sources.count(name)
        assert 0.07 * n_all < n_test < 0.13 * n_all
    for part in vars(splits).values():  # every entity row of a text travels with it
        assert len(part.entities) == len(part.texts)
    again = split_data(load_entity_data([str(DATA_DIR / "sentfin"), str(DATA_DIR / "finentity")]), seed=0)
    assert again.test.texts == splits.test.texts and again.test.entities == splits.test.entities
    assert split_data(pairs, seed=1).test.texts != splits.test.texts
    mixed_test, _ = mixed_accuracy(splits.test.texts, splits.test.entities, splits.test.labels, splits.test.labels)
    assert mixed_test == 1.0  # mixed-label texts reach test (stratified on 'mixed')


def test_a_user_table_with_an_entity_column_and_its_one_line_errors(tmp_path):
    table = tmp_path / "pairs.csv"
    table.write_text(
        "text,company,label\n"
        "Tesla up as Ford cuts guidance,Tesla,positive\n"
        "Tesla up as Ford cuts guidance,Ford,negative\n"
        "Tesla up as Ford cuts guidance,Ford,negative\n",
        encoding="utf-8",
    )
    data = load_entity_data(str(table), entity_column="company")
    assert data.entities == ["Tesla", "Ford"] and data.labels == [2, 0]
    with pytest.raises(FinsentError, match=r"pairs\.csv: no column 'entity' in the header"):
        load_entity_data(str(table))
    with pytest.raises(FinsentError, match="no entity labels in it"):
        load_entity_data(str(DATA_DIR / "twitter-financial-news"))
    mix = tmp_path / "mix.json"
    mix.write_text(json.dumps({"sources": [{"name": "sentfin"}]}), encoding="utf-8")
    with pytest.raises(FinsentError, match="mix files are for sentence-level runs"):
        load_entity_data(str(mix))


def test_train_refuses_a_corpus_without_entities_in_one_line(tmp_path):
    out = finsent_subprocess(
        "train", "--task", "entity", "--data_path", str(DATA_ZIP), "--output_dir", str(tmp_path / "run")
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "no entity labels in it" in out.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


def test_mixed_accuracy_counts_only_texts_whose_entities_disagree():
    texts = ["A up, B down", "A up, B down", "C flat", "D up, E up", "D up, E up"]
    entities = ["A", "B", "C", "D", "E"]
    acc, n = mixed_accuracy(texts, entities, [2, 0, 1, 2, 2], [2, 2, 0, 2, 2])
    assert (acc, n) == (0.5, 2)
    assert mixed_accuracy(texts[2:], entities[2:], [1, 2, 2], [1, 2, 2]) == (None, 0)
