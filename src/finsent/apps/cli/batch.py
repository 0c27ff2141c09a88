"""`finsent score`: batch scoring of file shards into a Parquet dataset, locally or on Ray."""

from __future__ import annotations

import argparse
import sys

from finsent.apps.cli.flags import add_command, from_args
from finsent.apps.shards import ScoreConfig


def cmd_score(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from finsent.apps.score import score

    hf_logging.disable_progress_bar()
    cfg = from_args(ScoreConfig, args)
    summary = score(cfg)
    unit = "(row, entity) rows" if summary.get("task") == "entity" else "rows"
    print(
        f"scored {summary['rows_scored_this_run']} {unit} in {summary['shards_scored_this_run']} shards "
        f"({summary['shards_done_earlier']} done earlier, {summary['rows']} rows in all) with {summary['model']['version']} "
        f"({summary['model']['backend']}, {cfg.engine}) -> {cfg.output} ({summary['elapsed_s']:.1f}s; summary in _summary.json)",
        file=sys.stderr,
    )
    daily = summary.get("entity_daily")
    if daily:
        undated = f"; {daily['undated']} rows without a readable date left out" if daily["undated"] else ""
        print(
            f"daily sentiment of {daily['entities']} entities ({daily['rows']} entity-days) -> {daily['csv']}, "
            f"{daily['parquet']} and {daily['html']}{undated}",
            file=sys.stderr,
        )
    return 0


def add_commands(sub, common: argparse.ArgumentParser) -> None:
    score_help = (
        "score CSV/JSONL/Parquet shards (local or s3://) into a Parquet dataset; resumable; local or Ray; an entity "
        "run: one row per (row, entity), with --date_column a daily per-entity table and report"
    )
    add_command(sub, "score", score_help, cmd_score, ScoreConfig, parents=[common])
