"""The service's settings: one pydantic-settings class read from ``NOISETUNE_*`` variables."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from search_spaces.storage import resolve_url

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class Settings(BaseSettings):
    """Where the service stores studies, where it listens, and who may write.

    ``storage`` left unset falls back to ``resolve_url`` (``NOISETUNE_STORAGE``, then a SQLite
    file in the working directory), so the server and the workers agree by default.
    """

    model_config = SettingsConfigDict(env_prefix="NOISETUNE_", extra="ignore")

    storage: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # A write token known without the tokens table (e.g. one shared secret for a small lab).
    api_token: SecretStr | None = None
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    read_requires_token: bool = False
    # "auto": writes need a token once the deployment looks shared (see service.auth);
    # "required": every write needs one, e.g. behind a proxy, where the bind address is
    # loopback and says nothing about who can reach the server.
    auth: Literal["auto", "required"] = "auto"
    # Host names the server answers to besides loopback ("*": any; only behind a proxy that
    # checks Host). Comma-separated in NOISETUNE_ALLOWED_HOSTS.
    allowed_hosts: Annotated[list[str], NoDecode] = []

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @property
    def storage_url(self) -> str:
        return resolve_url(self.storage)

    @property
    def exposed(self) -> bool:
        """Whether the server listens beyond this machine, which makes writes need a token."""
        return self.host not in LOOPBACK_HOSTS
