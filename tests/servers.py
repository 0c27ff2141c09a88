"""A real uvicorn `finsent serve` on 127.0.0.1 for the tests: start it on a free port, wait for it, stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, log: Path, *extra: str, env: dict | None = None):
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "finsent",
        "serve",
        "--model_dir",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log_level",
        "warning",
        *extra,
    ]
    with open(log, "w") as f:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            env={
                **{k: v for k, v in os.environ.items() if k != "FINSENT_API_KEY"},
                "PYTHONUNBUFFERED": "1",
                **(env or {}),
            },
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"server did not come up: {log.read_text()}")


def stop_server(proc, log: Path) -> str:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return log.read_text()
