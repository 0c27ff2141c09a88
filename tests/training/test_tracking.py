"""MLflow tracking of a run folder: what is logged, where by default, and that a failure only warns."""

import json

import pytest

from finsent.training import tracking
from runfactory import write_fake_run


def test_default_store_is_sqlite_in_the_outputs_folder(tmp_path):
    assert (
        tracking.default_tracking_uri(tmp_path / "runs" / "v1")
        == f"sqlite:///{(tmp_path / 'runs').resolve()}/mlruns.db"
    )


def test_params_and_metrics_flatten_results():
    results = {
        "accuracy": 0.9,
        "ece": 0.05,
        "use_lora": True,
        "temperature": 1.3,
        "n_test": 10,
        "per_class": {"neutral": {"precision": 1.0, "recall": 0.5, "f1": 0.66, "support": 4}},
        "error_types": {"High-Confidence Error": 2},
        "config": {"seed": 1, "lora": {"r": 8, "target_modules": ["query", "value"]}},
        "data": {"agreement": "all", "label_counts": {"neutral": 4}},
    }
    params = tracking.run_params(results)
    assert params["seed"] == "1" and params["lora.r"] == "8" and params["data.agreement"] == "all"
    assert params["lora.target_modules"] == "['query', 'value']" and "data.label_counts" not in params
    metrics = tracking.run_metrics(results)
    assert metrics["accuracy"] == 0.9 and metrics["temperature"] == 1.3 and metrics["f1_neutral"] == 0.66
    assert metrics["n_high_confidence_error"] == 2 and "use_lora" not in metrics


@pytest.mark.slow  # imports MLflow and creates its database
def test_log_run_to_local_sqlite(tmp_path, capsys):
    from mlflow import MlflowClient

    run = write_fake_run(tmp_path / "runs" / "v7", "v7", seed=3)
    run_id = tracking.log_run_safely(run)
    out = capsys.readouterr()
    assert run_id and out.err == "" and len(out.out.strip().splitlines()) == 1  # one line, no MLflow chatter
    db = tmp_path / "runs" / "mlruns.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    logged = client.get_run(run_id)
    results = json.loads((run / "results.json").read_text())
    assert logged.info.run_name == "v7" and logged.info.status == "FINISHED"
    assert logged.data.metrics["macro_f1"] == pytest.approx(results["macro_f1"])
    assert logged.data.tags["mode"] == "LoRA"
    assert {a.path for a in client.list_artifacts(run_id)} >= {"results.json", "evaluation_log.csv", "val_logits.npz"}
    assert (tmp_path / "runs" / "mlartifacts").is_dir() and not (tmp_path / "mlruns").exists()


def test_tracking_failure_warns_in_one_line_and_keeps_the_run(tmp_path, capsys):
    run = write_fake_run(tmp_path / "v1", "v1", seed=4)
    before = sorted(p.name for p in run.iterdir())
    assert tracking.log_run_safely(run, "bogus://nowhere") is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("finsent: warning: MLflow tracking failed") and str(run) in err[0]
    assert sorted(p.name for p in run.iterdir()) == before
