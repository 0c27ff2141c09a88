"""finsent.runs: the run folder contract (ModelInfo, the readers and writers) and race-free version claims."""

import threading

import numpy as np
import pytest

from finsent.core.errors import FinsentError
from finsent.data.labels import LABELS
from finsent.runs import folder
from finsent.runs.folder import ModelInfo, claim_run_dir, read_model_info, write_model_info
from runfactory import write_fake_run


def test_model_info_round_trip_keeps_extra_metadata(tmp_path):
    info = ModelInfo(
        "v7", max_length=64, model_name="m", use_lora=True, num_layers=2, extra={"teacher": "runs/v3", "threshold": 0.8}
    )
    write_model_info(tmp_path, info)
    back = read_model_info(tmp_path)
    assert back == info
    assert [p.name for p in tmp_path.iterdir()] == [folder.MODEL_INFO]


def test_model_info_falls_back_for_older_run_folders(tmp_path):
    write_fake_run(tmp_path / "old", "v4")  # results.json but no finsent_model.json
    info = read_model_info(tmp_path / "old")
    assert info.version == "v4" and info.max_length == folder.DEFAULT_MAX_LENGTH and info.labels == LABELS
    assert info.extra == {} and info.metrics["accuracy"] == folder.read_results(tmp_path / "old")["accuracy"]
    folder.write_label_map(tmp_path / "relabelled", ("bad", "meh", "good"))
    assert read_model_info(tmp_path / "relabelled").labels == ("bad", "meh", "good")
    with pytest.raises(FinsentError, match="no such run folder"):
        read_model_info(tmp_path / "nope")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / folder.MODEL_INFO).write_text("{", encoding="utf-8")
    with pytest.raises(FinsentError, match="invalid JSON"):
        read_model_info(tmp_path / "broken")


def test_val_logits_and_log_round_trip(tmp_path):
    logits = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    folder.write_val_logits(tmp_path, logits, [0, 1, 2, 1, 0])
    got = folder.read_val_logits(tmp_path)
    assert np.array_equal(got["logits"], logits) and got["labels"].tolist() == [0, 1, 2, 1, 0]
    assert [p.name for p in tmp_path.iterdir()] == [folder.VAL_LOGITS]  # no temp file left
    run = write_fake_run(tmp_path / "run", "v1", n=30)
    assert list(folder.read_log(run).columns) == folder.LOG_COLUMNS and len(folder.read_log(run)) == 30


def test_concurrent_claims_get_different_versions(tmp_path):
    """Eight trainings starting at the same moment into one runs/ folder each claim their own vN."""
    (tmp_path / "v2").mkdir()  # taken already
    start = threading.Barrier(8)
    claimed = []

    def claim():
        start.wait()
        for _ in range(3):
            claimed.append(claim_run_dir(tmp_path))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    versions = [v for _, v in claimed]
    assert len(set(versions)) == len(versions) == 24
    assert "v2" not in versions and set(versions) == {f"v{n}" for n in range(1, 26)} - {"v2"}
    assert all(path == tmp_path / v and path.is_dir() for path, v in claimed)


def test_claim_skips_versions_recorded_in_other_folders(tmp_path):
    write_fake_run(tmp_path / "lora", "v1")
    assert claim_run_dir(tmp_path) == (tmp_path / "v2", "v2")
    assert folder.next_version(tmp_path) == "v3"
    assert folder.recorded_version(tmp_path / "lora") == "v1" and folder.recorded_version(tmp_path / "v2") is None
