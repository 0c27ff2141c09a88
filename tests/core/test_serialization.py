import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pytest

from finsent.core.serialization import dumps, neutralise_cell, to_jsonable, write_csv, write_json


def test_numpy_scalars_and_arrays():
    obj = {"i": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True), "a": np.arange(3), "m": np.eye(2)}
    assert json.loads(dumps(obj)) == {"i": 3, "f": 0.5, "b": True, "a": [0, 1, 2], "m": [[1.0, 0.0], [0.0, 1.0]]}


def test_nan_and_inf_become_null_and_output_is_strict_json():
    text = dumps({"nan": float("nan"), "inf": np.float64(np.inf), "ninf": -math.inf, "arr": np.array([1.0, np.nan])})
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nan": None, "inf": None, "ninf": None, "arr": [1.0, None]}


def test_paths_datetimes_sets_tuples():
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    out = to_jsonable({"p": Path("/a/b"), "t": when, "d": dt.date(2026, 1, 2), "s": {2, 1}, "tu": (1, 2), 5: "key"})
    assert out == {
        "p": "/a/b",
        "t": "2026-01-02T03:04:05+00:00",
        "d": "2026-01-02",
        "s": [1, 2],
        "tu": [1, 2],
        "5": "key",
    }


def test_unknown_type_raises():
    with pytest.raises(TypeError):
        to_jsonable(object())


def test_atomic_writes_leave_no_temp_files(tmp_path):
    write_json(tmp_path / "r.json", {"x": np.float16(1.5)})
    write_csv(tmp_path / "r.csv", [{"a": np.int32(1), "b": "x,y"}], ["a", "b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.json"]
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": 1.5}
    assert (tmp_path / "r.csv").read_text().splitlines() == ["a,b", '1,"x,y"']


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "r.json"
    write_json(target, {"ok": 1})
    with pytest.raises(TypeError):
        write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_atomic_writes_get_the_mode_a_plain_open_gives(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "r.json", {"ok": 1})
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    mode = lambda name: stat.S_IMODE((tmp_path / name).stat().st_mode)  # noqa: E731
    assert mode("r.json") == mode("plain.txt") == 0o644  # readable by the dashboard server's user, not mkstemp's 0o600


@pytest.mark.parametrize("lead", ["=", "+", "-", "@", "\t", "\r"])
def test_a_cell_a_spreadsheet_would_run_as_a_formula_gets_a_quote(lead):
    assert neutralise_cell(lead + "SUM(A1:A9)") == "'" + lead + "SUM(A1:A9)"
    assert neutralise_cell(lead) == "'" + lead


@pytest.mark.parametrize(
    "value",
    ["", "Profit rose", " =1+1", "'=1+1", "1-2", "a@b", "\n=1", None, -0.5, 3, np.float32(-1.5), True, ["=1"], b"=1"],
)
def test_other_cells_are_left_as_they_are(value):
    assert neutralise_cell(value) is value


def test_write_csv_neutralises_string_cells_only_when_asked(tmp_path):
    rows = [{"text": '=HYPERLINK("http://x")', "score": -0.5, "note": "-0.5"}]
    write_csv(tmp_path / "safe.csv", rows, ["text", "score", "note"], neutralise=True)
    write_csv(tmp_path / "raw.csv", rows, ["text", "score", "note"])
    assert (tmp_path / "safe.csv").read_text().splitlines() == [
        "text,score,note",
        '"\'=HYPERLINK(""http://x"")",-0.5,-0.5',  # a plain number stays a number
    ]
    assert (tmp_path / "raw.csv").read_text().splitlines() == [
        "text,score,note",
        '"=HYPERLINK(""http://x"")",-0.5,-0.5',
    ]


def test_plain_numbers_are_not_formulas():
    from finsent.core.serialization import neutralise_cell

    for number in ("-0.5", "+3", "-1e-3", "-.25"):
        assert neutralise_cell(number) == number
    assert neutralise_cell("-1+A1") == "'-1+A1" and neutralise_cell("+SUM(A1)") == "'+SUM(A1)"
