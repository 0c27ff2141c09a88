"""The Docker image's entrypoint: `docker run IMAGE serve` (how SageMaker starts an inference container) serves
/opt/ml/model on 0.0.0.0:8080 with the ONNX backend; any other arguments are a `finsent` command line."""

from __future__ import annotations

import sys

SAGEMAKER_SERVE = ["serve", "--sagemaker", "--backend", "onnx"]


def container_argv(argv: list[str]) -> list[str]:
    """The `finsent` arguments for the container's arguments: the bare `serve` is SageMaker's serving command."""
    return list(SAGEMAKER_SERVE) if argv == ["serve"] else list(argv)


def main(argv: list[str] | None = None) -> int:
    from finsent.apps.cli import main as finsent_main

    return finsent_main(container_argv(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
