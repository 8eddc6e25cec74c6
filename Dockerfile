# Two images from one file (docker build --target ...):
#   service: the REST API, dashboard, CLI and migrations; no PyTorch.
#   worker:  the same plus PyTorch, CPU wheels by default; for CUDA wheels build with
#            --build-arg TORCH_VARIANT=cu128 (any variant PyTorch publishes wheels for).
FROM python:3.11-slim AS base
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY worker ./worker
COPY search_spaces ./search_spaces
RUN useradd --create-home noisetune

FROM base AS service
RUN pip install .
USER noisetune
EXPOSE 8000
CMD ["noisetune", "serve", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
ARG TORCH_VARIANT=cpu
ARG TORCH_SPEC="torch>=2.4"
# torch first, from the chosen variant's index, so resolving the project keeps that build.
RUN pip install "$TORCH_SPEC" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
    && pip install ".[worker]"
USER noisetune
CMD ["noisetune", "worker", "--device", "auto"]
