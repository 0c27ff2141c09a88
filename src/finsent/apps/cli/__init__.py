"""The `finsent` command line: one entry point, one subcommand per job, every command's flags from its config."""

from __future__ import annotations

import argparse
import os
import sys

from finsent.apps.cli import batch, catalog, documents, monitoring, serving, training
from finsent.core.errors import FinsentError
from finsent.core.logs import LEVELS, setup_logging


def build_parser(train_flags: bool = True) -> argparse.ArgumentParser:
    """The `finsent` parser; train_flags=False leaves out the training flags (generated from TrainConfig by
    transformers' HfArgumentParser, whose import takes seconds) for the commands that are not `train`."""
    parser = argparse.ArgumentParser(prog="finsent", description="Financial news sentiment: train, evaluate, serve.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log_level", default="info", choices=LEVELS, help="how much finsent reports (default: %(default)s)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    training.add_commands(sub, common, train_flags)
    catalog.add_commands(sub, common)
    serving.add_commands(sub, common)
    documents.add_commands(sub, common)
    batch.add_commands(sub, common)
    monitoring.add_commands(sub, common)
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(train_flags=argv[:1] in (["train"], ["distill"])).parse_args(argv)
    setup_logging(args.log_level)
    _quiet_libraries()
    try:
        return args.func(args)
    except FinsentError as e:
        print(f"finsent: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("finsent: interrupted; re-run with --resume_from_checkpoint auto to continue training", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
