"""`finsent monitor`: model health of served predictions against the run's own reference, without labels."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from finsent.apps.cli.flags import add_command, from_args
from finsent.apps.configs import MonitorConfig
from finsent.core.errors import FinsentError

FAIL_EXIT = 3  # --fail_on crossed: for cron and CI, apart from errors (2)


def cmd_monitor(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from finsent.apps.dashboard.production import monitor_page
    from finsent.core.serialization import write_json, write_text
    from finsent.monitoring import config
    from finsent.monitoring.inputs import read_inputs
    from finsent.monitoring.reference import build_reference
    from finsent.monitoring.report import crossed, monitor
    from finsent.runs.folder import read_model_info

    hf_logging.disable_progress_bar()
    cfg = from_args(MonitorConfig, args)
    window = config.parse_window(cfg.window)
    fail_on = config.parse_fail_on(cfg.fail_on)
    thresholds = config.MonitorThresholds.from_file(cfg.thresholds)
    info = read_model_info(cfg.model_dir)  # inputs first: a bad path or column fails before the model loads
    data, counts = read_inputs(cfg.predictions, tuple(info.labels), cfg.text_column, cfg.time_column)
    for path, seen in counts.items():
        other = [v for v in seen.get("model_versions", []) if v != info.version]
        if other:
            raise FinsentError(
                f"{path}: predictions of model version {', '.join(other)}, not {info.version} ({cfg.model_dir}); "
                "monitor each version against its own run folder"
            )
    has_text = "text" in data and data["text"].str.strip().astype(bool).any()
    off = "--no_novelty" if cfg.no_novelty else (None if has_text else "the inputs hold no text (serve --log_text)")
    ref = build_reference(cfg.model_dir, thresholds, novelty_off=off)
    report = {**monitor(data, ref, window, thresholds), "inputs": counts, "model_dir": str(cfg.model_dir)}
    out = Path(cfg.output)
    json_path = out.with_suffix(".json") if out.suffix.lower() in (".html", ".htm") else out
    write_json(json_path, report)
    written = [json_path]
    if json_path != out:
        write_text(out, monitor_page({**report, "source": str(json_path)}))
        written.append(out)
    s = report["summary"]
    print(
        f"monitor: {s['rows']:,} rows in {s['windows']} windows, {s['drifting_windows']} drifting; estimated accuracy "
        f"{min(w['estimated_accuracy'] for w in report['windows']):.3f} to "
        f"{max(w['estimated_accuracy'] for w in report['windows']):.3f} (test {ref.results.get('accuracy', float('nan')):.3f})"
        f" -> {', '.join(map(str, written))}"
    )
    if ref.novelty_note:
        print(f"finsent: note: {ref.novelty_note}", file=sys.stderr)
    reasons = crossed(report, fail_on)
    for reason in reasons:
        print(f"finsent: monitor: {reason} (--fail_on)", file=sys.stderr)
    return FAIL_EXIT if reasons else 0


def add_commands(sub, common: argparse.ArgumentParser) -> None:
    monitor_help = "model health of predictions (serve logs, predict/score outputs): estimated accuracy, drift, novelty"
    add_command(sub, "monitor", monitor_help, cmd_monitor, MonitorConfig, parents=[common])
