"""The worker's settings: one pydantic-settings class read from ``NOISETUNE_*`` variables,
and the check of ``--batch``.

Command-line options override them; the storage URL follows search_spaces.storage's rule
(``--storage``, else ``NOISETUNE_STORAGE``, else ./noisetune.db), shared with the service.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from search_spaces.storage import resolve_url

DEFAULT_DATA_DIR = Path.home() / ".cache" / "noisetune" / "mnist"
MAX_STACK = 4096


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOISETUNE_", extra="ignore")

    storage: str | None = None
    # Where MNIST's IDX files are (a task config's data_dir overrides it).
    data_dir: Path = DEFAULT_DATA_DIR
    log_level: str = "INFO"
    # torch's CPU threads per worker process: the paper's small networks run best on one,
    # and local workers share the cores.
    torch_threads: int = Field(default=1, ge=1, le=1024)
    # Where trials keep checkpoints: a directory or an fsspec URL (default: a folder beside
    # a SQLite database; none for other databases).
    checkpoints: str | None = None

    @property
    def storage_url(self) -> str:
        return resolve_url(self.storage)


# Here rather than beside the stacking it sizes, so that checking `--batch` needs no torch
# (`noisetune launch` checks it on a login node).
def parse_stack_size(text: str) -> int | None:
    """``--batch``: a whole number of trials >= 1, or None for ``auto``."""
    given, text = text, str(text).strip().lower()
    if text == "auto":
        return None
    try:
        k = int(text)
    except ValueError:
        k = 0
    if not 1 <= k <= MAX_STACK:
        raise SystemExit(
            f"--batch must be 'auto' or a whole number from 1 to {MAX_STACK}, got {given!r}"
        )
    return k
