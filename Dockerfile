# CPU image for the finsent HTTP API. The model is not baked in: mount a run folder that has been through
# `finsent export-onnx` (or its onnx/ folder) at /model.
#   docker build -t finsent .
#   docker run --rm -p 8000:8000 -v "$PWD/runs/v1:/model:ro" finsent
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TOKENIZERS_PARALLELISM=false

WORKDIR /app
# CPU-only PyTorch first, so the package's torch requirement does not pull the CUDA build.
RUN pip install "torch>=2.4,<2.14" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && useradd --create-home --uid 1000 finsent

USER finsent
EXPOSE 8000
VOLUME ["/model"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
CMD ["finsent", "serve", "--model_dir", "/model", "--host", "0.0.0.0", "--port", "8000", "--backend", "onnx"]
