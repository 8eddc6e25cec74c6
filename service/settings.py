"""The service's settings: one pydantic-settings class read from ``NOISETUNE_*`` variables."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from search_spaces.storage import resolve_url

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_MAX_TRIAL_MEMORY = 8 * 2**30
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNITS.update({f"{u}i": 2 ** (10 * i) for i, u in enumerate("kmgt", start=1)})


def parse_bytes(value: Any) -> Any:
    """``8GiB``, ``512 MB``, ``8G`` or a whole number of bytes, as a number of bytes."""
    if not isinstance(value, str):
        return value
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*", value.lower())
    if found is None:
        raise ValueError(f"expected a size such as 8GiB, 512MB or 1073741824, got {value!r}")
    return int(float(found.group(1)) * _UNITS[found.group(2) or ""])


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
    # The most memory one trial may need, by its task's estimate (NOISETUNE_MAX_TRIAL_MEMORY,
    # e.g. 8GiB or 24GB): a study whose trials could need more is refused at submission.
    max_trial_memory: int = Field(default=DEFAULT_MAX_TRIAL_MEMORY, ge=1)

    @field_validator("max_trial_memory", mode="before")
    @classmethod
    def _bytes(cls, value: Any) -> Any:
        return parse_bytes(value)

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


class ClientSettings(BaseSettings):
    """What the CLI and `service.client.Client` need to talk to a server: its URL and a token."""

    model_config = SettingsConfigDict(env_prefix="NOISETUNE_", extra="ignore")

    server: str = "http://127.0.0.1:8000"
    # Sent as "Authorization: Bearer ..." when set; the server's own write token also lives
    # in this variable (Settings.api_token), so a server's host submits with it.
    api_token: SecretStr | None = None
