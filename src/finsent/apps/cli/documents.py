"""`finsent analyze` and `finsent index`."""

from __future__ import annotations

import argparse
import os

from finsent.apps.cli.flags import add_command, from_args
from finsent.apps.cli.serving import predictor_for
from finsent.apps.configs import AnalyzeConfig, IndexConfig
from finsent.core.errors import FinsentError
from finsent.inference.factory import PredictorOptions


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _report(cfg: AnalyzeConfig, args: argparse.Namespace) -> dict:
    from finsent.documents import analysis, extraction

    if cfg.index:
        from finsent.documents.retrieval import CorpusIndex

        if cfg.inputs:
            raise FinsentError("give INPUT documents or --index DIR, not both")
        if not cfg.ask:
            raise FinsentError("--index needs at least one --ask QUESTION")
        index = CorpusIndex.load(cfg.index)
        return analysis.ask_index(predictor_for(args), index, cfg.ask, cfg.top_k)
    if not cfg.inputs:
        raise FinsentError("nothing to analyze: give .txt, .md, .html or .pdf files, folders, or - for stdin")
    docs = analysis.prepare(extraction.load_documents(cfg.inputs))
    return analysis.analyze(predictor_for(args), docs, cfg.ask, cfg.top_k)


def cmd_analyze(args: argparse.Namespace) -> int:
    from finsent.documents import analysis
    from finsent.documents.report import output_format, write_report

    cfg = from_args(AnalyzeConfig, args)
    if cfg.output:
        output_format(cfg.output)
        if any(os.path.realpath(cfg.output) == os.path.realpath(p) for p in cfg.inputs):
            raise FinsentError(f"--output {cfg.output}: is an input document; write the report to another file")
    analysis.check_questions(cfg.ask, cfg.top_k)
    report = _report(cfg, args)
    if not cfg.output:
        from finsent.core.serialization import dumps

        print(dumps(report))
        return 0
    write_report(report, cfg.output, raw_csv=cfg.raw_csv)
    for doc in report["documents"]:
        counts = ", ".join(f"{v} {k}" for k, v in doc["counts"].items())
        print(
            f"{doc['source']}: {doc['label']} ({doc['score']:+.3f}; {_plural(len(doc['sentences']), 'sentence')}: "
            f"{counts}; {_plural(len(doc['sections']), 'section')})"
        )
    if cfg.index:
        print(
            f"{_plural(len(cfg.ask), 'question')} answered from {_plural(report['index']['sentences'], 'sentence')} in {cfg.index}"
        )
    print(f"report: {cfg.output}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from finsent.documents.retrieval import Encoder, build_index

    cfg = from_args(IndexConfig, args)
    hf_logging.disable_progress_bar()
    encoder = Encoder(batch_size=cfg.batch_size, num_threads=cfg.threads)
    manifest = build_index(cfg.inputs, cfg.output, encoder, progress=not cfg.quiet)
    print(f"indexed {manifest['sentences']} sentences from {len(manifest['documents'])} documents -> {cfg.output}")
    return 0


def add_commands(sub, common: argparse.ArgumentParser) -> None:
    analyze_help = "sentence sentiment, section and document aggregates and evidence for long documents"
    add_command(sub, "analyze", analyze_help, cmd_analyze, AnalyzeConfig, PredictorOptions, parents=[common])
    index_help = "embed every sentence of a folder of documents into a faiss index for --ask"
    add_command(sub, "index", index_help, cmd_index, IndexConfig, parents=[common])
