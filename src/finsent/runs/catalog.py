"""Many run folders: loading them for the dashboard and exports, and the `finsent runs` table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.core.logs import warn
from finsent.runs.folder import Run, is_run_folder, load_run, read_results


def expand_run_dir(path: Path) -> list[Path]:
    """A run folder stands for itself; a folder that is not a run but holds run folders (like runs/) for those."""
    path = Path(path)
    if path.is_dir() and not is_run_folder(path):
        children = sorted(c for c in path.iterdir() if c.is_dir() and is_run_folder(c))
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
