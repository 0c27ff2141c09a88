"""Record a finished run folder in MLflow tracking (local SQLite by default), so `mlflow ui` lists every run."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from finsent.core.logs import LOGGER, warn
from finsent.runs.folder import (
    EVALUATION_LOG,
    LABEL_MAP,
    MODEL_INFO,
    RESULTS,
    SCALAR_METRICS,
    SOURCE_METRICS,
    VAL_LOGITS,
    read_results,
)

EXPERIMENT = "finsent"
DB_NAME = "mlruns.db"
ARTIFACTS_DIR = "mlartifacts"
# the small files that describe a run; the weights stay in the run folder (tagged as run_dir)
LOGGED_FILES = (RESULTS, EVALUATION_LOG, VAL_LOGITS, MODEL_INFO, LABEL_MAP, "adapter_config.json")


def default_tracking_uri(run_dir: Path) -> str:
    """sqlite:///<outputs folder>/mlruns.db, the outputs folder being the run folder's parent."""
    return f"sqlite:///{Path(run_dir).resolve().parent / DB_NAME}"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def run_params(results: dict) -> dict:
    """MLflow params: the training config and data description, flattened, as strings."""
    params = _flatten({**results.get("config", {}), "data": results.get("data", {})})
    params.pop("data.label_counts", None)
    return {k: str(v)[:500] for k, v in params.items()}


def run_metrics(results: dict) -> dict:
    """MLflow metrics: headline figures, per-class F1 and error-type counts (numbers only)."""
    out = {
        k: float(results[k])
        for k in SCALAR_METRICS
        if isinstance(results.get(k), (int, float)) and not isinstance(results.get(k), bool)
    }
    for label, m in results.get("per_class", {}).items():
        for name in ("precision", "recall", "f1"):
            if isinstance(m.get(name), (int, float)):
                out[f"{name}_{label}"] = float(m[name])
    for source, m in results.get("per_source", {}).items():
        if len(results["per_source"]) > 1:  # one source's metrics are the pooled ones
            out.update(
                {f"{name}_{source}": float(m[name]) for name in SOURCE_METRICS if isinstance(m.get(name), (int, float))}
            )
    for etype, count in results.get("error_types", {}).items():
        out[f"n_{etype.lower().replace('-', '_').replace(' ', '_')}"] = float(count)
    return out


def run_tags(run_dir: Path, results: dict) -> dict:
    return {
        "version": str(results.get("version")),
        "model_name": str(results.get("model_name")),
        "mode": "LoRA" if results.get("use_lora") else "full",
        "run_dir": str(Path(run_dir).resolve()),
        "created_at": str(results.get("created_at")),
        "mlflow.note.content": f"finsent {results.get('version')}: run folder {Path(run_dir).resolve()}",
    }


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reporting over the network
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # an unreachable team server fails in seconds rather than minutes of retries (override in the environment)
    for name, value in (
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "20"),
    ):
        os.environ.setdefault(name, value)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def log_run(run_dir: Path, tracking_uri: str | None = None) -> tuple[str, str]:
    """Log a finished run folder (params, metrics, tags, small artifacts) as one MLflow run; return (uri, run id)."""
    run_dir = Path(run_dir)
    results = read_results(run_dir, check=False)
    uri = tracking_uri or default_tracking_uri(run_dir)
    _quiet_mlflow()
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    _quiet_mlflow()  # mlflow sets its own logger level on import
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    elif uri.startswith("sqlite:///"):  # local store: artifacts beside the database, not in the working directory
        artifacts = (Path(uri[len("sqlite:///") :]).resolve().parent / ARTIFACTS_DIR).as_uri()
        experiment_id = client.create_experiment(EXPERIMENT, artifact_location=artifacts)
    else:
        experiment_id = client.create_experiment(EXPERIMENT)
    run = client.create_run(experiment_id, run_name=str(results.get("version")), tags=run_tags(run_dir, results))
    run_id = run.info.run_id
    try:
        params = [Param(k, v) for k, v in run_params(results).items()]
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in run_metrics(results).items()]
        client.log_batch(run_id, metrics=metrics, params=params)
        for name in LOGGED_FILES:
            if (run_dir / name).is_file():
                client.log_artifact(run_id, str(run_dir / name))
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return uri, run_id


def log_run_safely(
    run_dir: Path,
    tracking_uri: str | None = None,
    log: Callable[[str], None] = LOGGER.info,
    warn: Callable[[str], None] = warn,
) -> str | None:
    """log_run, but a tracking failure only warns in one line: the run folder is the source of truth."""
    try:
        uri, run_id = log_run(run_dir, tracking_uri)
    except Exception as e:  # noqa: BLE001 - any tracking failure must not cost the finished run
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        warn(f"MLflow tracking failed ({type(e).__name__}: {first[:200]}); the run folder {run_dir} is complete")
        return None
    log(
        f"tracked in MLflow: {uri} (experiment {EXPERIMENT}, run {run_id}); view with `mlflow ui --backend-store-uri {uri}`"
    )
    return run_id
