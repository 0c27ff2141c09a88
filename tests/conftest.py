"""Shared fixtures: the real PhraseBank zip beside the checkout and short real training runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("FINSENT_CHROMIUM", "/usr/bin/chromium")
DATA_ZIP = Path(os.environ.get("FINSENT_DATA", ROOT.parent / "shared" / "data" / "FinancialPhraseBank-v1.0.zip"))
SENTFIN = DATA_ZIP.parent / "sentfin"
FINENTITY = DATA_ZIP.parent / "finentity"


TRAINED_FIXTURES = {"lora_run", "full_run", "onnx_run", "entity_run"}


def pytest_collection_modifyitems(items):
    """Every test that needs a trained run (a fixture that trains one) is slow."""
    for item in items:
        if TRAINED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def phrasebank_zip() -> Path:
    if not DATA_ZIP.is_file():
        pytest.fail(f"Financial PhraseBank not found at {DATA_ZIP}; put the zip in ../shared/data/ or set FINSENT_DATA")
    return DATA_ZIP


def finsent_subprocess(*argv: str) -> subprocess.CompletedProcess:
    """`python -m finsent ARGV` in a fresh process from the checkout (no stdin, warnings off), for exit codes and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "finsent", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def finish_within(seconds: float, fn, *args, **kwargs):
    """fn(*args, **kwargs) on a thread: its result, or its exception raised here; a failed test, not a hung run,
    where it takes longer than `seconds` (a pipeline stage waiting forever)."""
    import threading

    outcome: dict = {}

    def call():
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - raised on the test's thread
            outcome["error"] = e

    thread = threading.Thread(target=call, name="finish-within", daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{getattr(fn, '__name__', fn)} still running after {seconds} s: a stage hangs"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def pipeline_threads() -> list[str]:
    """The names of core.pipeline's stage threads still alive (none once a run has returned or raised)."""
    import threading

    return [t.name for t in threading.enumerate() if t.name in ("finsent-read", "finsent-write")]


def train_short(output_dir: Path, data_path: Path, *extra: str) -> dict:
    """A real, short training run through the CLI (400 train sentences, 1 epoch)."""
    from finsent.apps.cli import main
    from finsent.core.serialization import read_json

    argv = [
        "train",
        "--data_path",
        str(data_path),
        "--output_dir",
        str(output_dir),
        "--num_epochs",
        "2",
        "--max_train_samples",
        "400",
        "--max_length",
        "64",
        "--extra_train_agreement",
        "75",
        *extra,
    ]
    assert main(argv) == 0
    return read_json(output_dir / "results.json")


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def lora_run(runs_root, phrasebank_zip) -> Path:
    train_short(runs_root / "lora", phrasebank_zip, "--use_lora", "--version", "v1")
    return runs_root / "lora"


@pytest.fixture(scope="session")
def full_run(runs_root, lora_run, phrasebank_zip) -> Path:
    """Full fine-tuning; no --version, so it takes the next free one (v2) beside the LoRA run."""
    train_short(runs_root / "full", phrasebank_zip)
    return runs_root / "full"


@pytest.fixture(scope="session")
def onnx_run(lora_run, tmp_path_factory) -> Path:
    """A copy of the LoRA run with `finsent export-onnx` output in <run>/onnx (fp32 and int8)."""
    import shutil

    from finsent.apps.cli import main

    run = tmp_path_factory.mktemp("onnx") / "lora"
    shutil.copytree(lora_run, run)
    assert main(["export-onnx", "--model_dir", str(run)]) == 0
    return run


@pytest.fixture(scope="session")
def entity_run(runs_root) -> Path:
    """A real, short entity-level run (--task entity) on SEntFiN and FinEntity: 400 train pairs, 1 epoch, LoRA."""
    from finsent.apps.cli import main

    for folder in (SENTFIN, FINENTITY):
        if not folder.is_dir():
            pytest.fail(f"{folder} not found: the shared data folder beside the checkout has the entity corpora")
    out = runs_root / "entity"
    argv = ["train", "--task", "entity", "--data_path", str(SENTFIN), str(FINENTITY), "--output_dir", str(out)]
    argv += ["--use_lora", "--num_epochs", "1", "--max_train_samples", "400", "--max_eval_samples", "300"]
    assert main([*argv, "--max_length", "64", "--version", "e1"]) == 0
    return out


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium (or set FINSENT_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()
