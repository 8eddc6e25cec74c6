"""The worker's settings: one pydantic-settings class read from ``NOISETUNE_*`` variables.

Command-line options override them; the storage URL follows search_spaces.storage's rule
(``--storage``, else ``NOISETUNE_STORAGE``, else ./noisetune.db), shared with the service.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from search_spaces.storage import resolve_url

DEFAULT_DATA_DIR = Path.home() / ".cache" / "noisetune" / "mnist"


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
