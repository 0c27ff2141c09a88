# CPU image for the finsent HTTP API. The model is not baked in: mount a run folder that has been through
# `finsent export-onnx` at /model, and give the API key clients must send (the server refuses 0.0.0.0 without one).
#   docker build -t finsent .
#   docker run --rm -p 8000:8000 -e FINSENT_API_KEY -v "$PWD/runs/v1:/model:ro" finsent
# SageMaker starts the container as `docker run IMAGE serve`: that serves /opt/ml/model on 0.0.0.0:8080
# (finsent serve --sagemaker --backend onnx; see finsent/apps/container.py). Other arguments are a finsent command line.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TOKENIZERS_PARALLELISM=false

WORKDIR /app
# CPU-only PyTorch first, so the package's torch requirement does not pull the CUDA build.
RUN pip install "torch>=2.4,<2.14" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY src ./src
# Code and packages stay root-owned and read-only to the server, which runs as an unprivileged user.
RUN pip install . && useradd --create-home --no-log-init --uid 1000 --shell /usr/sbin/nologin finsent

USER finsent
EXPOSE 8000 8080
VOLUME ["/model"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request as r; r.urlopen('http://127.0.0.1:8000/health', timeout=4)" \
     || python -c "import urllib.request as r; r.urlopen('http://127.0.0.1:8080/ping', timeout=4)"
ENTRYPOINT ["python", "-m", "finsent.apps.container"]
CMD ["serve", "--model_dir", "/model", "--host", "0.0.0.0", "--port", "8000", "--backend", "onnx"]
