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
    from finsent.data.entities import ENTITY, SENTENCE
    from finsent.documents import analysis, extraction
    from finsent.runs.folder import require_task

    if cfg.index:
        from finsent.documents.retrieval import CorpusIndex

        if cfg.inputs:
            raise FinsentError("give INPUT documents or --index DIR, not both")
        if not cfg.ask:
            raise FinsentError("--index needs at least one --ask QUESTION")
        if cfg.entities:
            raise FinsentError("--entities scores the entities of INPUT documents; it does not work with --index")
        index = CorpusIndex.load(cfg.index)
        require_task(cfg.model_dir, SENTENCE, "analyze --index")
        return analysis.ask_index(predictor_for(args), index, cfg.ask, cfg.top_k)
    if not cfg.inputs:
        raise FinsentError("nothing to analyze: give .txt, .md, .html or .pdf files, folders, or - for stdin")
    watchlist = None
    if cfg.entities:
        from finsent.data.watchlist import read_watchlist

        watchlist = read_watchlist(cfg.entities)
    docs = analysis.prepare(extraction.load_documents(cfg.inputs))
    require_task(cfg.model_dir, ENTITY if watchlist else SENTENCE, "analyze --entities" if watchlist else "analyze")
    if watchlist is not None:
        from finsent.documents.entities import analyze_entities

        return analyze_entities(predictor_for(args), docs, watchlist)
    return analysis.analyze(predictor_for(args), docs, cfg.ask, cfg.top_k)


def _print_documents(report: dict) -> None:
    for doc in report["documents"]:
        counts = ", ".join(f"{v} {k}" for k, v in doc["counts"].items())
        print(
            f"{doc['source']}: {doc['label']} ({doc['score']:+.3f}; {_plural(len(doc['sentences']), 'sentence')}: "
            f"{counts}; {_plural(len(doc['sections']), 'section')})"
        )


def _print_entities(report: dict) -> None:
    for doc in report["documents"]:
        found = f"{len(doc['entities'])} watchlist entit{'y' if len(doc['entities']) == 1 else 'ies'}"
        sents, pairs = _plural(len(doc["sentences"]), "sentence"), _plural(len(doc["pairs"]), "pair")
        print(f"{doc['source']}: {sents}; {found} named in {pairs}")
    for e in report["entities"]:
        counts = ", ".join(f"{v} {k}" for k, v in e["counts"].items())
        print(
            f"  {e['entity']}: {e['label']} ({e['score']:+.3f}; {_plural(e['mentions'], 'mention')} in "
            f"{_plural(e['documents'], 'document')}: {counts})"
        )
    if not report["entities"]:
        print(f"none of the {report['watchlist']} watchlist entities is named in the documents")


def cmd_analyze(args: argparse.Namespace) -> int:
    from finsent.documents import analysis
    from finsent.documents.report import output_format, write_report

    cfg = from_args(AnalyzeConfig, args)
    if cfg.output:
        output_format(cfg.output)
        out = os.path.realpath(cfg.output)
        same = [p for p in [*cfg.inputs, cfg.entities or ""] if p and out == os.path.realpath(p)]
        if same:
            what = "the watchlist" if same[0] == cfg.entities else "an input document"
            raise FinsentError(f"--output {cfg.output}: is {what}; write the report to another file")
    analysis.check_questions(cfg.ask, cfg.top_k)
    if cfg.entities and cfg.ask:
        raise FinsentError("--ask: questions are answered with a sentence-level run; leave out --entities to ask")
    report = _report(cfg, args)
    if not cfg.output:
        from finsent.core.serialization import dumps

        print(dumps(report))
        return 0
    write_report(report, cfg.output, raw_csv=cfg.raw_csv)
    (_print_entities if report.get("task") == "entity" else _print_documents)(report)
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
    analyze_help = (
        "sentence sentiment, section and document aggregates and evidence for long documents; with an entity run and "
        "--entities, per-entity sentiment"
    )
    add_command(sub, "analyze", analyze_help, cmd_analyze, AnalyzeConfig, PredictorOptions, parents=[common])
    index_help = "embed every sentence of a folder of documents into a faiss index for --ask"
    add_command(sub, "index", index_help, cmd_index, IndexConfig, parents=[common])
