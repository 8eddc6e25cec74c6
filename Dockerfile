# One image for the service and the workers; the compose file picks the command.
# GPU workers: build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
FROM python:3.11-slim

ARG TORCH_SPEC="torch>=2.4"
ARG TORCH_INDEX=""
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY worker ./worker
COPY search_spaces ./search_spaces

# torch first, from the chosen index, so the project's resolution keeps that build.
RUN if [ -n "$TORCH_INDEX" ]; then pip install "$TORCH_SPEC" --index-url "$TORCH_INDEX"; \
    else pip install "$TORCH_SPEC"; fi \
    && pip install .

RUN useradd --create-home noisetune
USER noisetune
EXPOSE 8000
CMD ["noisetune", "serve", "--host", "0.0.0.0", "--port", "8000"]
