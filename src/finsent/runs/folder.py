"""The run folder contract: its file names, ModelInfo, and the readers and writers of every file training writes.

No other module names these files; the dashboard, the export, `finsent runs`, serving and training go through here."""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from finsent.core.errors import FinsentError
from finsent.core.serialization import read_json, write_csv, write_json
from finsent.data.labels import LABELS

WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors")


def weights_digest(model_dir: Path) -> str | None:
    """sha256 of the run's safetensors weights (adapter or full model), to tell a stale ONNX export."""
    for name in WEIGHT_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            return h.hexdigest()
    return None


if TYPE_CHECKING:
    import pandas as pd

MODEL_INFO = "finsent_model.json"
RESULTS = "results.json"
EVALUATION_LOG = "evaluation_log.csv"
VAL_LOGITS = "val_logits.npz"
LABEL_MAP = "label_map.json"
SENTENCES = "sentences.json"  # hashes of the run's train / validation / test sentences (distillation's leakage guard)
TEACHER_LOGITS = "teacher_logits.npz"  # a teacher's raw logits by sentence hash, cached for distillation
MONITOR_REFERENCE = "monitor_reference.npz"  # training sentences' embeddings and validation's novelty, for monitor
CHECKPOINTS = "checkpoints"
ONNX_DIR = "onnx"
EARLY_EXIT_DIR = "early_exit"  # a run's early exit: a shallower student distilled from it (`distill --num_layers`)
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
ONNX_ORT_INT8 = "model.ort.int8.onnx"  # onnxruntime dynamic int8 on the fused graph (finsent.export.tuning)
EXPORT_INFO = "export.json"
RUN_METADATA_FILES = (MODEL_INFO, LABEL_MAP, RESULTS)  # what an exported folder copies to describe itself
DEFAULT_MAX_LENGTH = 128
DEFAULT_RUNS_ROOT = Path("runs")
LOG_COLUMNS = [
    "sample_id",
    "source",
    "text",
    "entity",
    "true_label",
    "pred_label",
    "confidence",
    "margin",
    *[f"prob_{name}" for name in LABELS],
    "is_correct",
    "error_type",
    "run_version",
]
# every number results.json holds at its top level, in one order: MLflow's metrics and the Power BI runs table
SCALAR_METRICS = (
    "accuracy",
    "macro_f1",
    "avg_confidence",
    "ece",
    "ece_calibrated",
    "temperature",
    "val_nll_before",
    "val_nll_after",
    "n_train",
    "n_val",
    "n_test",
    "trainable_params",
    "total_params",
    "trainable_percent",
    "train_runtime_s",
    "epochs_run",
    "best_val_macro_f1",
    "mixed_accuracy",
    "n_mixed",
)
SOURCE_METRICS = (
    "accuracy",
    "macro_f1",
    "ece",
    "n_train",
    "n_val",
    "n_test",
    "mixed_accuracy",
)  # of each source in per_source
METRIC_KEYS = ("accuracy", "macro_f1", "ece", "avg_confidence", "per_class", "n_train", "n_val", "n_test", "created_at")


# ---- finsent_model.json -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """What a run folder says about itself.

    Training writes version, model_name, use_lora, num_layers (where cut), max_length, labels and `extra` (free metadata such as a distilled
    student's teacher) to finsent_model.json; temperature and metrics are read from results.json, never written here."""

    version: str
    labels: tuple[str, ...] = LABELS
    max_length: int = DEFAULT_MAX_LENGTH
    model_name: str | None = None
    use_lora: bool | None = None
    num_layers: int | None = None  # the encoder layers kept of model_name's (a shallower student); None: all
    task: str = "sentence"  # "entity": the model reads (text, entity) pairs built by data.entities.entity_input
    entity_input: dict | None = None  # an entity run's EntityFormat as JSON
    extra: dict = field(default_factory=dict)
    temperature: float = 1.0
    metrics: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The finsent_model.json object."""
        out = {
            "version": self.version,
            "model_name": self.model_name,
            "use_lora": self.use_lora,
            "max_length": self.max_length,
            "labels": list(self.labels),
        }
        if self.num_layers is not None:
            out["num_layers"] = self.num_layers
        if self.task != "sentence":
            out.update(task=self.task, entity_input=self.entity_input or {})
        return {**out, "extra": self.extra} if self.extra else out


def _read_object(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise FinsentError(f"{path}: cannot read ({e}); is the run folder complete?") from None
    except json.JSONDecodeError as e:
        raise FinsentError(f"{path}:{e.lineno}: invalid JSON ({e.msg}); re-run training or export") from None
    if not isinstance(obj, dict):
        raise FinsentError(f"{path}: expected a JSON object")
    return obj


def _temperature(value) -> float:
    """The fitted temperature, or 1.0 where there is none or it is not a positive finite number."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        return 1.0
    return t if math.isfinite(t) and t > 0 else 1.0


def write_model_info(run_dir: Path, info: ModelInfo) -> None:
    write_json(Path(run_dir) / MODEL_INFO, info.to_json())


def read_model_info(run_dir: str | Path) -> ModelInfo:
    """The one reader of finsent_model.json (with label_map.json and results.json; all optional but the folder)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FinsentError(f"{run_dir}: no such run folder; pass --model_dir pointing at a training --output_dir")
    meta = _read_object(run_dir / MODEL_INFO) if (run_dir / MODEL_INFO).is_file() else {}
    results = _read_object(run_dir / RESULTS) if (run_dir / RESULTS).is_file() else {}
    labels = meta.get("labels")
    if not labels and (run_dir / LABEL_MAP).is_file():
        id2label = _read_object(run_dir / LABEL_MAP).get("id2label", {})
        labels = [id2label[k] for k in sorted(id2label, key=int)] if id2label else None
    extra = meta.get("extra")
    return ModelInfo(
        version=str(meta.get("version") or results.get("version") or run_dir.name),
        labels=tuple(labels or LABELS),
        max_length=int(meta.get("max_length") or DEFAULT_MAX_LENGTH),
        model_name=meta.get("model_name"),
        use_lora=meta.get("use_lora"),
        num_layers=int(meta["num_layers"]) if meta.get("num_layers") else None,
        task=str(meta.get("task") or "sentence"),
        entity_input=meta.get("entity_input") if isinstance(meta.get("entity_input"), dict) else None,
        extra=extra if isinstance(extra, dict) else {},
        temperature=_temperature(results.get("temperature", 1.0)),
        metrics={k: results[k] for k in METRIC_KEYS if k in results},
    )


def require_task(run_dir: str | Path, task: str, what: str) -> ModelInfo:
    """The run's info, or one line when a command of one task is given a run of the other."""
    info = read_model_info(run_dir)
    if info.task != task:
        hint = (
            "train one with `finsent train --task entity`, or leave out the entity options"
            if task == "entity"
            else "give it entities (--entity_column or --entities), or pass a sentence-level run"
        )
        a = {"entity": "an entity", "sentence": "a sentence"}
        raise FinsentError(
            f"{run_dir}: {a.get(info.task, info.task)}-level run, but {what} needs {a.get(task, task)}-level run; {hint}"
        )
    return info


def write_label_map(run_dir: Path, labels=LABELS) -> None:
    """label_map.json: id2label and label2id, as transformers configs spell them."""
    write_json(
        Path(run_dir) / LABEL_MAP,
        {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}},
    )


def read_export_info(folder: Path) -> dict:
    """export.json of an ONNX export folder ({} where there is none)."""
    path = Path(folder) / EXPORT_INFO
    return _read_object(path) if path.is_file() else {}


def write_export_info(folder: Path, info: dict) -> None:
    write_json(Path(folder) / EXPORT_INFO, info)


# ---- versions -----------------------------------------------------------------------------------------------


def recorded_version(run_dir: Path) -> str | None:
    """The version a (possibly unfinished) run folder already carries, or None for a new or unreadable one."""
    run_dir = Path(run_dir)
    if not any((run_dir / name).is_file() for name in (MODEL_INFO, RESULTS)):
        return None
    try:
        return read_model_info(run_dir).version
    except FinsentError:
        return None


def _taken_versions(runs_root: Path) -> set[str]:
    taken = set()
    if runs_root.is_dir():
        for child in runs_root.iterdir():
            taken.add(child.name)
            try:
                taken.add(str(read_json(child / RESULTS).get("version")))
            except (OSError, ValueError, AttributeError):
                pass
    return taken


def next_version(runs_root: Path) -> str:
    """The next free v1, v2, ... among run folders (names and results.json versions) under runs_root."""
    taken = _taken_versions(Path(runs_root))
    n = 1
    while f"v{n}" in taken:
        n += 1
    return f"v{n}"


def claim_run_dir(runs_root: Path = DEFAULT_RUNS_ROOT) -> tuple[Path, str]:
    """Create runs_root/vN for the next free N, atomically: concurrent trainings each get their own version."""
    runs_root = Path(runs_root)
    runs_root.mkdir(parents=True, exist_ok=True)
    taken = _taken_versions(runs_root)
    n = 1
    while True:
        version = f"v{n}"
        if version not in taken:
            try:
                os.mkdir(runs_root / version)  # fails if another process claimed it first
                return runs_root / version, version
            except FileExistsError:
                pass
        n += 1


# ---- results.json, evaluation_log.csv, val_logits.npz -------------------------------------------------------


def write_results(run_dir: Path, results: dict) -> None:
    write_json(Path(run_dir) / RESULTS, results)


def write_log(run_dir: Path, rows: list[dict]) -> None:
    """evaluation_log.csv; the entity column only for an entity-level run's rows."""
    entity = bool(rows) and "entity" in rows[0]
    write_csv(Path(run_dir) / EVALUATION_LOG, rows, [c for c in LOG_COLUMNS if entity or c != "entity"])


def write_val_logits(run_dir: Path, logits: np.ndarray, labels) -> None:
    """val_logits.npz: the validation split's raw logits and labels (for calibration and the recipe search)."""
    path = Path(run_dir) / VAL_LOGITS
    tmp = path.parent / f".{path.stem}.tmp.npz"
    np.savez(tmp, logits=np.asarray(logits), labels=np.asarray(labels))
    os.replace(tmp, path)


def write_sentences(run_dir: Path, record: dict) -> None:
    write_json(Path(run_dir) / SENTENCES, record)


def read_sentences(run_dir: Path) -> dict | None:
    """sentences.json, or None for a run trained before it was written."""
    file = Path(run_dir) / SENTENCES
    return _read_object(file) if file.is_file() else None


def write_teacher_logits(run_dir: Path, keys: list[str], logits: np.ndarray, weights_sha256: str) -> None:
    path = Path(run_dir) / TEACHER_LOGITS
    tmp = path.parent / f".{path.stem}.tmp.npz"
    np.savez(tmp, keys=np.asarray(keys), logits=np.asarray(logits, dtype=np.float32), weights_sha256=weights_sha256)
    os.replace(tmp, path)


def write_monitor_reference(run_dir: Path, arrays: dict[str, np.ndarray], weights_sha256: str) -> bool:
    """Cache monitor's reference arrays beside the run; False (nothing written) where the folder is read-only."""
    path = Path(run_dir) / MONITOR_REFERENCE
    tmp = path.parent / f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp.npz"  # two monitors at once
    try:
        np.savez(tmp, weights_sha256=weights_sha256, **arrays)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    return True


def read_monitor_reference(run_dir: Path, weights_sha256: str) -> dict[str, np.ndarray] | None:
    """monitor's cached reference arrays, or None where there are none for these weights."""
    file = Path(run_dir) / MONITOR_REFERENCE
    if not file.is_file():
        return None
    try:
        with np.load(file) as npz:
            if str(npz["weights_sha256"]) != weights_sha256:
                return None
            return {k: npz[k] for k in npz.files if k != "weights_sha256"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, zlib.error):  # a damaged cache is recomputed
        return None


def read_teacher_logits(run_dir: Path, weights_sha256: str) -> dict[str, np.ndarray]:
    """Cached teacher logits by sentence hash; empty where none are cached or they came from other weights."""
    file = Path(run_dir) / TEACHER_LOGITS
    if not file.is_file():
        return {}
    try:
        with np.load(file) as npz:
            if str(npz["weights_sha256"]) != weights_sha256:
                return {}
            return dict(zip(npz["keys"].tolist(), npz["logits"]))
    except (OSError, ValueError, KeyError):
        return {}


def is_run_folder(path: Path) -> bool:
    return any((Path(path) / name).exists() for name in (RESULTS, EVALUATION_LOG, MODEL_INFO))


REQUIRED_RESULTS = ("version", "accuracy", "macro_f1", "ece", "per_class", "confusion_matrix")
NUMERIC_COLUMNS = ("confidence", "margin", *(f"prob_{name}" for name in LABELS))
PROB_COLUMNS = [f"prob_{name}" for name in LABELS]


@dataclass
class Run:
    """One run folder: its results, its per-sentence log and a label unique among the runs loaded."""

    path: Path
    results: dict
    log: pd.DataFrame
    label: str = ""
    val_logits: dict | None = field(default=None, repr=False)

    @property
    def version(self) -> str:
        return str(self.results["version"])

    @property
    def probs(self) -> np.ndarray:
        return self.log[PROB_COLUMNS].to_numpy(dtype=np.float64)

    @property
    def y_true(self) -> np.ndarray:
        return self.log["true_label"].map({n: i for i, n in enumerate(LABELS)}).to_numpy(dtype=np.int64)

    @property
    def y_pred(self) -> np.ndarray:
        return self.log["pred_label"].map({n: i for i, n in enumerate(LABELS)}).to_numpy(dtype=np.int64)


def read_results(path: Path, check: bool = True) -> dict:
    """results.json, checked for the keys every view needs (check=False: any JSON object, e.g. for tracking)."""
    file = Path(path) / RESULTS
    if not check:
        return _read_object(file)
    if not file.is_file():
        raise FinsentError(f"{file}: missing; is {path} a finished training run folder?")
    try:
        results = read_json(file)
    except (ValueError, UnicodeDecodeError) as e:
        raise FinsentError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(results, dict):
        raise FinsentError(f"{file}: expected a JSON object")
    missing = [k for k in REQUIRED_RESULTS if k not in results]
    if missing:
        raise FinsentError(f"{file}: missing key(s) {', '.join(missing)}")
    cm = np.asarray(results["confusion_matrix"], dtype=object)
    if cm.shape != (len(LABELS), len(LABELS)) or not all(isinstance(v, int) for v in cm.ravel()):
        raise FinsentError(f"{file}: confusion_matrix is not a {len(LABELS)}x{len(LABELS)} table of counts")
    if not isinstance(results["per_class"], dict) or set(results["per_class"]) != set(LABELS):
        raise FinsentError(f"{file}: per_class must have exactly the labels {', '.join(LABELS)}")
    return results


def read_log(path: Path) -> pd.DataFrame:
    """evaluation_log.csv, checked for every column with numbers, labels and booleans parsed."""
    import pandas as pd

    file = Path(path) / EVALUATION_LOG
    if not file.is_file():
        raise FinsentError(f"{file}: missing")
    try:
        log = pd.read_csv(
            file,
            dtype={
                "source": str,
                "text": str,
                "entity": str,
                "true_label": str,
                "pred_label": str,
                "error_type": str,
                "run_version": str,
            },
            keep_default_na=False,
            encoding="utf-8",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise FinsentError(
            f"{file}: not a readable CSV ({str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__})"
        ) from None
    if "source" not in log.columns:  # a log written before runs learned from several corpora: one unnamed source
        log.insert(1, "source", "data")
    if "entity" not in log.columns:  # a sentence-level run's log
        log.insert(list(log.columns).index("text") + 1 if "text" in log.columns else 2, "entity", "")
    missing = [c for c in LOG_COLUMNS if c not in log.columns]
    if missing:
        raise FinsentError(f"{file}: missing column(s) {', '.join(missing)}")
    if log.empty:
        raise FinsentError(f"{file}: no rows")
    for col in NUMERIC_COLUMNS:
        values = pd.to_numeric(log[col], errors="coerce")
        if values.isna().any():
            row = int(values.isna().to_numpy().argmax()) + 2
            raise FinsentError(f"{file}:{row}: {col} is not a number")
        log[col] = values.astype(float)
    for col in ("true_label", "pred_label"):
        bad = ~log[col].isin(LABELS)
        if bad.any():
            row = int(bad.to_numpy().argmax()) + 2
            raise FinsentError(f"{file}:{row}: unknown {col} {log[col][bad].iloc[0]!r}")
    log["is_correct"] = log["is_correct"].astype(str).str.lower().eq("true")
    return log


def read_val_logits(path: Path) -> dict | None:
    """{"logits", "labels"} of val_logits.npz, or None where it is missing or unreadable."""
    file = Path(path) / VAL_LOGITS
    if not file.is_file():
        return None
    try:
        with np.load(file) as npz:
            return {"logits": npz["logits"], "labels": npz["labels"]}
    except (OSError, ValueError, KeyError):
        return None


def load_run(path: Path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise FinsentError(f"{path}: no such run folder")
    return Run(path, read_results(path), read_log(path), val_logits=read_val_logits(path))
