"""Read run folders (results.json + evaluation_log.csv) for the dashboard, the export and `finsent runs`."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from finsent.data import LABELS
from finsent.errors import FinsentError
from finsent.evaluation import LOG_COLUMNS
from finsent.serialization import read_json

REQUIRED_RESULTS = ("version", "accuracy", "macro_f1", "ece", "per_class", "confusion_matrix")
NUMERIC_COLUMNS = ("confidence", "margin", *(f"prob_{name}" for name in LABELS))
PROB_COLUMNS = [f"prob_{name}" for name in LABELS]


def warn(message: str) -> None:
    print(f"finsent: warning: {message}", file=sys.stderr)


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


def read_results(path: Path) -> dict:
    """results.json, checked for the keys every view needs."""
    file = Path(path) / "results.json"
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
    file = Path(path) / "evaluation_log.csv"
    if not file.is_file():
        raise FinsentError(f"{file}: missing")
    try:
        log = pd.read_csv(
            file,
            dtype={"text": str, "true_label": str, "pred_label": str, "error_type": str, "run_version": str},
            keep_default_na=False,
            encoding="utf-8",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise FinsentError(
            f"{file}: not a readable CSV ({str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__})"
        ) from None
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
    file = Path(path) / "val_logits.npz"
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


def _is_run_folder(path: Path) -> bool:
    return any((path / name).exists() for name in ("results.json", "evaluation_log.csv", "finsent_model.json"))


def expand_run_dir(path: Path) -> list[Path]:
    """A run folder stands for itself; a folder that is not a run but holds run folders (like runs/) for those."""
    path = Path(path)
    if path.is_dir() and not _is_run_folder(path):
        children = sorted(c for c in path.iterdir() if c.is_dir() and _is_run_folder(c))
        if children:
            return children
    return [path]


def _created(run: Run) -> str:
    return str(run.results.get("created_at") or "")


def load_runs(dirs: list[str | Path], on_warning: Callable[[str], None] = warn) -> list[Run]:
    """Load every readable run in the order given (an expanded parent folder: oldest first).

    Each unreadable run gives one warning line and is skipped; no readable run at all is an error."""
    runs: list[Run] = []
    seen: set[Path] = set()
    for given in dirs:
        group = []
        for path in expand_run_dir(Path(given)):
            if path.resolve() in seen:  # the same folder given twice
                continue
            seen.add(path.resolve())
            try:
                group.append(load_run(path))
            except FinsentError as e:
                on_warning(f"{e}; skipped")
        runs.extend(sorted(group, key=_created) if len(group) > 1 else group)
    if not runs:
        names = ", ".join(str(d) for d in dirs) or "(none)"
        raise FinsentError(
            f"no readable run folder among {names}; each needs results.json and evaluation_log.csv from `finsent train`"
        )
    label_runs(runs)
    return runs


def label_runs(runs: list[Run]) -> None:
    """Label runs by version, adding the folder name where two runs share a version."""
    versions = [r.version for r in runs]
    for r in runs:
        r.label = r.version if versions.count(r.version) == 1 else f"{r.version} ({r.path.name})"
    labels = [r.label for r in runs]
    for i, r in enumerate(runs):
        if labels.count(r.label) > 1:
            r.label = f"{r.label} #{i + 1}"


# ---- `finsent runs` ---------------------------------------------------------------------------------------

TABLE_COLUMNS = ("version", "date", "model", "mode", "accuracy", "macro-F1", "ECE", "training", "folder")


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _date(created_at) -> str:
    if not created_at:
        return "-"
    try:
        return dt.datetime.fromisoformat(str(created_at)).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return str(created_at)[:16]


def run_row(path: Path, results: dict) -> dict:
    """One row of the runs table, formatted."""
    runtime = results.get("train_runtime_s")
    return {
        "version": str(results.get("version", "-")),
        "date": _date(results.get("created_at")),
        "model": str(results.get("model_name") or "-"),
        "mode": {True: "LoRA", False: "full"}.get(results.get("use_lora"), "-"),
        "accuracy": _fmt(results.get("accuracy"), ".4f"),
        "macro-F1": _fmt(results.get("macro_f1"), ".4f"),
        "ECE": _fmt(results.get("ece"), ".4f"),
        "training": "-" if runtime is None else f"{runtime:.0f}s",
        "folder": str(path),
    }


def runs_table(root: Path, on_warning: Callable[[str], None] = warn) -> list[dict]:
    """Rows for every run folder under root (or root itself), oldest first; unreadable ones warn and are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FinsentError(f"{root}: no such folder; pass --root with the folder that holds your run folders")
    rows = []
    for path in expand_run_dir(root):
        try:
            results = read_results(path)
        except FinsentError as e:
            on_warning(f"{e}; skipped")
            continue
        rows.append((str(results.get("created_at") or ""), run_row(path, results)))
    if not rows:
        raise FinsentError(f"{root}: no training runs found (run folders hold results.json from `finsent train`)")
    return [row for _, row in sorted(rows, key=lambda r: r[0])]


def format_table(rows: list[dict], columns=TABLE_COLUMNS) -> str:
    """A plain fixed-width text table."""
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    numeric = {"accuracy", "macro-F1", "ECE", "training"}

    def line(values: dict) -> str:
        return "  ".join(
            values[c].rjust(widths[c]) if c in numeric else values[c].ljust(widths[c]) for c in columns
        ).rstrip()

    header = line({c: c for c in columns})
    return "\n".join([header, "  ".join("-" * widths[c] for c in columns), *(line(r) for r in rows)])
