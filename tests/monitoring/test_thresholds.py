"""Monitoring thresholds as data, --window and --fail_on."""

from __future__ import annotations

import pytest

from finsent.core.errors import FinsentError
from finsent.monitoring.config import MonitorThresholds, parse_fail_on, parse_window


def test_parse_window():
    assert parse_window("500") == ("rows", 500)
    assert parse_window("1h") == ("time", "1h")
    assert parse_window("30min") == ("time", "30min")
    assert parse_window("1d") == ("time", "1D")
    for bad in ("0", "1 fortnight", "-5", "h"):
        with pytest.raises(FinsentError, match="--window"):
            parse_window(bad)


def test_parse_fail_on():
    assert parse_fail_on(None) == {"drift": False, "accuracy_below": None}
    assert parse_fail_on(["drift", "accuracy_below=0.9"]) == {"drift": True, "accuracy_below": 0.9}
    for bad in (["accuracy_below=high"], ["accuracy_below=1.5"], ["drift=1"], ["speed"]):
        with pytest.raises(FinsentError, match="--fail_on"):
            parse_fail_on(bad)


def test_thresholds_from_json_and_yaml(tmp_path):
    (tmp_path / "t.json").write_text('{"alpha": 0.01, "psi": 0.2}')
    (tmp_path / "t.yaml").write_text("novelty_quantile: 0.99\nmin_rows: 50\n")
    assert MonitorThresholds.from_file(tmp_path / "t.json").alpha == 0.01
    assert MonitorThresholds.from_file(tmp_path / "t.yaml").min_rows == 50
    assert MonitorThresholds.from_file(None) == MonitorThresholds()


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"alpah": 0.01}', "unknown threshold 'alpah'"),
        ('{"alpha": 2}', "alpha = 2 must be in"),
        ('{"psi": true}', "psi = True must be"),
        ('{"draws": 200.5}', "draws = 200.5 must be a whole number"),
        ('{"alpha": "1e-3"}', "alpha = '1e-3' must be a number"),
        ('{"seed": -1}', "seed = -1 must be 0 or more"),
        ("[1, 2]", "an object of names"),
        ("{oops", "not a valid thresholds file"),
    ],
)
def test_bad_thresholds_are_one_line(tmp_path, text, message):
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(FinsentError, match=message) as e:
        MonitorThresholds.from_file(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
