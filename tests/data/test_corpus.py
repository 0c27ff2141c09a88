import json
import subprocess
import sys
import zipfile

import pytest

from finsent.core.errors import FinsentError
from finsent.data.corpus import load_data
from finsent.data.labels import LABELS
from finsent.data.splits import check_no_leakage, split_data

RAW_LINES = {"50": 4846, "66": 4217, "75": 3453, "all": 2264}


@pytest.mark.parametrize("agreement", list(RAW_LINES))
def test_every_agreement_level_reads_all_lines(phrasebank_zip, agreement):
    data = load_data(phrasebank_zip, agreement)
    src = data.source
    assert src["n_raw"] == RAW_LINES[agreement]
    assert len(data) == src["n_raw"] - src["duplicates_removed"] - 2 * src["conflicts_removed"]
    assert len(set(data.texts)) == len(data)
    assert set(data.labels) == {0, 1, 2}
    assert len(src["sha256"]) == 64


def test_50agree_duplicates_and_conflicts(phrasebank_zip):
    # 8 duplicated sentences, 2 of them with conflicting labels: 6 extra copies removed, 2 sentences (4 lines) dropped.
    src = load_data(phrasebank_zip, "50").source
    assert (src["duplicates_removed"], src["conflicts_removed"]) == (6, 2)


def test_reads_folder_and_single_txt_like_the_zip(phrasebank_zip, tmp_path):
    with zipfile.ZipFile(phrasebank_zip) as zf:
        zf.extractall(tmp_path)
    folder = tmp_path / "FinancialPhraseBank-v1.0"
    from_zip = load_data(phrasebank_zip, "75")
    assert load_data(folder, "75").texts == from_zip.texts
    assert load_data(folder / "Sentences_75Agree.txt").texts == from_zip.texts  # a file ignores --agreement
    assert any("\u00e4" in t or "\u00f6" in t for t in from_zip.texts), "latin-1 characters decoded"


def test_split_is_stratified_deterministic_and_leak_free(phrasebank_zip):
    data = load_data(phrasebank_zip, "all")
    a, b, c = split_data(data, 1), split_data(data, 1), split_data(data, 2)
    assert a.test.texts == b.test.texts and a.train.texts == b.train.texts
    assert a.test.texts != c.test.texts
    assert len(a.train) + len(a.val) + len(a.test) == len(data)
    assert abs(len(a.test) - 0.1 * len(data)) <= 1 and abs(len(a.val) - 0.1 * len(data)) <= 1
    for part in (a.train, a.val, a.test):
        share = part.labels.count(0) / len(part)
        assert abs(share - data.labels.count(0) / len(data)) < 0.02
    assert not set(a.train.texts) & set(a.test.texts) and not set(a.train.texts) & set(a.val.texts)


def test_leakage_check_fails_loudly(phrasebank_zip):
    s = split_data(load_data(phrasebank_zip, "all"), 0)
    s.test.texts[0] = s.train.texts[0]
    with pytest.raises(RuntimeError, match="also appear in train"):
        check_no_leakage(s)


def test_csv_and_jsonl_user_data(tmp_path):
    csv_file = tmp_path / "d.csv"
    csv_file.write_text(
        "headline,sentiment\nShares rose,positive\nShares fell,Negative\nShares rose,positive\nFlat day,neutral\n"
    )
    data = load_data(csv_file, text_column="headline", label_column="sentiment")
    assert data.texts == ["Shares rose", "Shares fell", "Flat day"] and data.source["duplicates_removed"] == 1
    jl = tmp_path / "d.jsonl"
    jl.write_text(
        "\n".join(
            json.dumps({"text": t, "label": lab})
            for t, lab in [("a", "positive"), ("b", "negative"), ("a", "negative")]
        )
    )
    data = load_data(jl)
    assert data.texts == ["b"] and data.source["conflicts_removed"] == 1


def _bad(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content.encode("latin-1"))
    return p


@pytest.mark.parametrize(
    "name,content,expected",
    [
        ("s.txt", "Good sentence@positive\r\nno label here\r\n", "s.txt:2: no '@label'"),
        ("s.txt", "Good sentence@positive\r\nBad one@bullish\r\n", "s.txt:2: unknown label 'bullish'"),
        ("s.txt", "", "the file is empty"),
        ("d.csv", "sentence,label\nx,positive\n", "no column 'text'"),
        ("d.csv", "text,label\nx,great\n", "d.csv:2: unknown label 'great'"),
        ("d.jsonl", '{"text": "x", "label": "positive"}\n{broken\n', "d.jsonl:2: invalid JSON"),
        ("d.jsonl", '{"text": "x"}\n', "d.jsonl:1: missing field 'label'"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, name, content, expected):
    with pytest.raises(FinsentError, match=expected.replace("(", r"\(")):
        load_data(_bad(tmp_path, name, content))


def test_missing_path(tmp_path):
    with pytest.raises(FinsentError, match="no such file"):
        load_data(tmp_path / "nope.zip")


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "finsent", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.mark.slow  # each case starts `python -m finsent train`
@pytest.mark.parametrize(
    "case", ["no_label", "missing", "bad_lora_key", "bad_lora_json", "bad_lora_value", "not_a_zip"]
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, case):
    data = _bad(tmp_path, "s.txt", "".join(f"Sentence {i}@{LABELS[i % 3]}\r\n" for i in range(30)))
    lora = tmp_path / "lora.json"
    args = [
        "train",
        "--data_path",
        str(data),
        "--output_dir",
        str(tmp_path / "run"),
        "--use_lora",
        "--lora_config",
        str(lora),
    ]
    lora.write_text('{"r": 8, "lora_alpha": 16, "target_modules": ["query", "value"]}')
    expected = {
        "no_label": "s.txt:31",
        "missing": "missing.txt: no such file",
        "bad_lora_key": "unknown key 'rank'",
        "bad_lora_json": "lora.json:1: invalid JSON",
        "bad_lora_value": "invalid value for 'r'",
        "not_a_zip": "not a valid zip",
    }[case]
    if case == "no_label":
        data.write_bytes(data.read_bytes() + b"trailing line without a label\r\n")
    elif case == "missing":
        args[2] = str(tmp_path / "missing.txt")
    elif case == "bad_lora_key":
        lora.write_text('{"rank": 8}')
    elif case == "bad_lora_json":
        lora.write_text('{"r": 8,')
    elif case == "bad_lora_value":
        lora.write_text('{"r": -1}')
    elif case == "not_a_zip":
        args[2] = str(_bad(tmp_path, "fpb.zip", "not a zip"))
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("finsent: error: ") and expected in lines[0], lines[0]
    assert not (tmp_path / "run" / "results.json").exists()


def test_extra_training_data_never_includes_val_or_test(phrasebank_zip):
    from finsent.data.splits import add_to_train

    splits = split_data(load_data(phrasebank_zip, "all"), 3)
    extra = load_data(phrasebank_zip, "50")
    more, n = add_to_train(splits, extra)
    assert len(more.train) == len(splits.train) + n and n > 2000
    check_no_leakage(more)
    assert more.val.texts == splits.val.texts and more.test.texts == splits.test.texts
    assert len(set(more.train.texts)) == len(more.train)
