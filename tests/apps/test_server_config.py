"""`finsent serve`'s start-up rules without a server: API key sources, refusing open non-loopback binds, the
SageMaker mode and the container entrypoint that maps `docker run IMAGE serve` to it."""

import json
import re
from pathlib import Path

import pytest

from finsent.apps.cli import build_parser, main
from finsent.apps.container import container_argv
from finsent.apps.container import main as container_main
from finsent.apps.server import check_exposure, is_loopback, parse_csv, read_api_key, sagemaker_port
from finsent.core.errors import FinsentError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch):
    for name in ("FINSENT_API_KEY", "SAGEMAKER_BIND_TO_PORT"):
        monkeypatch.delenv(name, raising=False)


def test_api_key_from_file_or_env(tmp_path):
    key = tmp_path / "key"
    key.write_text("  s3cret \n")
    assert read_api_key(str(key), {"FINSENT_API_KEY": "other"}) == "s3cret"  # the explicit file wins
    assert read_api_key(None, {"FINSENT_API_KEY": "from-env"}) == "from-env"
    assert read_api_key(None, {}) is None
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "two").write_text("one two\n")
    for path, message in [
        (tmp_path / "missing", "no such API key file"),
        (tmp_path / "empty", "is empty"),
        (tmp_path / "two", "more than one word"),
        (tmp_path, "cannot read"),
    ]:
        with pytest.raises(FinsentError, match=message) as e:
            read_api_key(str(path), {})
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FinsentError, match="FINSENT_API_KEY is set but empty"):
        read_api_key(None, {"FINSENT_API_KEY": " "})


@pytest.mark.parametrize(
    "host,loopback",
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_exposure_rules():
    assert check_exposure("127.0.0.1", None, False, False) is None
    assert check_exposure("0.0.0.0", "key", False, False) is None
    with pytest.raises(FinsentError, match="FINSENT_API_KEY") as e:
        check_exposure("0.0.0.0", None, False, False)
    assert "\n" not in str(e.value) and "--allow_unauthenticated" in str(e.value)
    assert "without an API key" in check_exposure("0.0.0.0", None, True, False)
    assert "IAM" in check_exposure("0.0.0.0", None, False, True)


def test_sagemaker_port():
    assert sagemaker_port({}) == 8080
    assert sagemaker_port({"SAGEMAKER_BIND_TO_PORT": "9001"}) == 9001
    with pytest.raises(FinsentError, match="SAGEMAKER_BIND_TO_PORT"):
        sagemaker_port({"SAGEMAKER_BIND_TO_PORT": "http"})


def test_csv_body_one_text_a_line():
    body = b'Profit rose, sales fell\n"quoted, with ""quotes""\nand a line break"\nplain\n'
    assert parse_csv(body) == ["Profit rose, sales fell", 'quoted, with "quotes"\nand a line break', "plain"]
    assert parse_csv("\ufeffa\r\nb\r\n".encode()) == ["a", "b"]  # as Excel saves it: a BOM and CRLF


def serve_stderr(capsys, argv: list[str], run=main) -> tuple[int, list[str]]:
    code = run(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def test_serve_refuses_an_open_public_bind_before_loading_the_model(capsys, tmp_path):
    missing = str(tmp_path / "no-run")
    code, err = serve_stderr(capsys, ["serve", "--model_dir", missing, "--host", "0.0.0.0"])
    assert code == 2 and len(err) == 1 and "FINSENT_API_KEY" in err[0] and err[0].startswith("finsent: error: ")
    # with the override or a key, the same command gets past the check and fails on the missing model instead
    code, err = serve_stderr(capsys, ["serve", "--model_dir", missing, "--host", "0.0.0.0", "--allow_unauthenticated"])
    assert code == 2 and "without an API key" in err[0] and "no such run folder" in err[-1]
    (tmp_path / "key").write_text("k")
    code, err = serve_stderr(
        capsys, ["serve", "--model_dir", missing, "--host", "::", "--api_key_file", str(tmp_path / "key")]
    )
    assert code == 2 and len(err) == 1 and "no such run folder" in err[0]
    code, err = serve_stderr(capsys, ["serve", "--model_dir", missing, "--api_key_file", str(tmp_path / "nope")])
    assert code == 2 and len(err) == 1 and "no such API key file" in err[0]
    code, err = serve_stderr(capsys, ["serve"])
    assert code == 2 and "--model_dir" in err[0] and "--sagemaker" in err[0]


def test_serve_log_flags_are_checked_before_loading_the_model(capsys, tmp_path):
    missing = str(tmp_path / "no-run")
    code, err = serve_stderr(capsys, ["serve", "--model_dir", missing, "--log_text"])
    assert code == 2 and len(err) == 1 and err[0].startswith("finsent: error: --log_text")
    assert "--log_predictions DIR" in err[0] and "Traceback" not in "\n".join(err)
    (tmp_path / "a-file").write_text("x")
    code, err = serve_stderr(capsys, ["serve", "--model_dir", missing, "--log_predictions", str(tmp_path / "a-file")])
    assert code == 2 and len(err) == 1 and "not a folder" in err[0] and str(tmp_path / "a-file") in err[0]
    # a folder (made if missing) gets past the checks: the command fails on the missing model instead
    code, err = serve_stderr(capsys, ["serve", "--model_dir", missing, "--log_predictions", str(tmp_path / "logs")])
    assert code == 2 and len(err) == 1 and "no such run folder" in err[0]
    args = build_parser().parse_args(["serve", "--model_dir", missing, "--metrics_public"])
    assert args.metrics_public and args.log_predictions is None and not args.log_text


def test_container_serve_is_the_sagemaker_mode(capsys, monkeypatch):
    assert container_argv(["serve"]) == ["serve", "--sagemaker", "--backend", "onnx"]
    args = build_parser().parse_args(container_argv(["serve"]))
    assert args.sagemaker and args.backend == "onnx" and args.model_dir is None
    assert container_argv(["predict", "Profit rose"]) == ["predict", "Profit rose"]  # other commands pass through
    assert not Path("/opt/ml/model").exists(), "this test expects no SageMaker model folder on the test machine"
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "8181")
    code, err = serve_stderr(capsys, ["serve"], run=container_main)
    assert code == 2
    assert err[0].startswith("finsent: SageMaker mode: serving on 0.0.0.0 without an API key")
    assert "/opt/ml/model" in err[-1] and "no such run folder" in err[-1]


def test_dockerfile_wiring():
    text = (ROOT / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))
    assert entrypoint == ["python", "-m", "finsent.apps.container"]
    args = build_parser().parse_args(container_argv(cmd))  # `docker run IMAGE` with no arguments
    assert not args.sagemaker and args.host == "0.0.0.0" and args.model_dir == "/model" and args.backend == "onnx"
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")


def test_streams_need_an_onnx_engine_and_at_least_one(lora_run):
    from finsent.apps.configs import ServeConfig
    from finsent.inference.factory import PredictorOptions, build_predictor

    with pytest.raises(FinsentError, match="--streams 0: must be at least 1"):
        ServeConfig(model_dir="run", streams=0)
    with pytest.raises(FinsentError, match="--balance_ms -1: give a time from 0 to 1000 ms"):
        ServeConfig(model_dir="run", balance_ms=-1)
    with pytest.raises(FinsentError, match="--max_wait_ms 5000: give a time from 0 to 1000 ms"):
        ServeConfig(model_dir="run", max_wait_ms=5000)
    with pytest.raises(FinsentError, match="--streams 2: concurrent forward passes run on an ONNX engine") as e:
        build_predictor(lora_run, PredictorOptions(backend="torch"), streams=2)
    assert "\n" not in str(e.value)
    assert build_predictor(lora_run, PredictorOptions(backend="torch"), streams=None).streams == 1  # auto: torch, one
