"""A Python client of the noisetune REST API, for scripts and notebooks.

    from service.client import Client

    with Client("http://127.0.0.1:8000") as c:
        study = c.submit("study.yaml")
        c.wait(study.name)
        df = c.dataframe(study.name)

Answers are the server's own models (`service.schemas`); a refusal raises `ClientError`
with the server's status and message, a server out of reach `ServerUnreachable`.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from service.client_errors import (
    ClientError,
    NoisetuneError,
    ServerUnreachable,
    SpecFileError,
    server_message,
)
from service.client_wait import wait_for_study
from service.schemas import (
    DEFAULT_EVALUATOR,
    AnalysisPublic,
    Evaluator,
    ImportancePublic,
    QueuedTrialPublic,
    QueuedTrialsPublic,
    StudiesPublic,
    StudyPublic,
    TrialPublic,
    TrialsPublic,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Client",
    "ClientError",
    "NoisetuneError",
    "ServerUnreachable",
    "SpecFileError",
    "read_spec_file",
]

API = "/api/v1"
# The largest page the server gives (service.api.studies.MAX_PAGE).
TRIALS_PAGE = 1000
# The export's time columns, read as timezone-aware timestamps (UTC).
TIME_COLUMNS = ("datetime_start", "datetime_complete")


def read_spec_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A study spec from a YAML or JSON file (JSON is YAML), as the server will get it."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpecFileError(f"{path} is not valid YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise SpecFileError(f"{path} must hold a mapping (the study spec), not {kind}")
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SpecFileError(f"{path} holds a value JSON cannot carry: {exc}") from None
    return data


class Client:
    """A noisetune server at `url` (default: ``NOISETUNE_SERVER``, else
    ``http://127.0.0.1:8000``), sending `token` as a bearer token (default:
    ``NOISETUNE_API_TOKEN``, if set; ``""`` sends none)."""

    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout: float = 60.0
    ) -> None:
        from service.settings import ClientSettings

        settings = ClientSettings()
        self.url = (url or settings.server).rstrip("/")
        if token is None and settings.api_token is not None:
            token = settings.api_token.get_secret_value()
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url + API, headers=headers, timeout=timeout)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the wire ---------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, params: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        """`method` on the API path `path` (``/api/v1`` is added), `body` sent as JSON.

        Raises ClientError on a 4xx or 5xx answer, ServerUnreachable without one, and
        ValueError for a body JSON cannot carry (NaN, infinities), before sending it.
        """
        content = None
        headers = {}
        if body is not None:
            try:
                content = json.dumps(body, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"the request holds a value JSON cannot carry: {exc}") from None
            headers["content-type"] = "application/json"
        try:
            response = self._http.request(
                method, path, content=content, headers=headers, params=params
            )
        except httpx.ConnectError:
            raise ServerUnreachable(
                self.url,
                f"cannot connect to the noisetune server at {self.url} "
                "(is `noisetune serve` running?)",
            ) from None
        except httpx.TransportError as exc:
            raise ServerUnreachable(
                self.url, f"request to {self.url} failed: {type(exc).__name__}: {exc}"
            ) from None
        if response.status_code >= 400:
            message, detail = server_message(response)
            raise ClientError(response.status_code, message, detail, str(response.url))
        return response

    def _json(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        given = {k: v for k, v in params.items() if v is not None}
        return self.request(method, path, body, given or None).json()

    # -- studies ----------------------------------------------------------------------------

    def submit(self, spec: Mapping[str, Any] | str | os.PathLike[str]) -> StudyPublic:
        """Create a study from a spec: a mapping, or the path of a YAML or JSON file."""
        body = read_spec_file(spec) if isinstance(spec, str | os.PathLike) else dict(spec)
        return StudyPublic.model_validate(self._json("POST", "/studies", body))

    def study(self, name: str) -> StudyPublic:
        return StudyPublic.model_validate(self._json("GET", _study(name)))

    def studies(self) -> list[StudyPublic]:
        return StudiesPublic.model_validate(self._json("GET", "/studies")).data

    def set(
        self,
        name: str,
        *,
        n_trials: int | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        notes: str | None = None,
    ) -> StudyPublic:
        """Change the given fields of a study (``notes=""`` clears its notes); its status
        stays, but growing a completed study's n_trials makes it running again."""
        given = {"n_trials": n_trials, "priority": priority, "max_retries": max_retries}
        body = {k: v for k, v in {**given, "notes": notes}.items() if v is not None}
        return StudyPublic.model_validate(self._json("PATCH", _study(name), body))

    def stop(self, name: str) -> StudyPublic:
        """Workers take no new trials of the study; running ones finish."""
        return StudyPublic.model_validate(self._json("POST", _study(name, "stop")))

    def resume(self, name: str) -> StudyPublic:
        return StudyPublic.model_validate(self._json("POST", _study(name, "resume")))

    def delete(self, name: str) -> None:
        """Delete the study and all its trials."""
        self.request("DELETE", _study(name))

    def wait(
        self,
        name: str,
        timeout: float | None = None,
        *,
        interval: float = 1.0,
        progress: bool | None = None,
    ) -> StudyPublic:
        """Poll the study every `interval` seconds until it is completed, stopped or failed;
        the study then. TimeoutError after `timeout` seconds. A progress bar is drawn on
        stderr when it is a terminal (`progress` True or False decides instead)."""
        return wait_for_study(lambda: self.study(name), timeout, interval, progress)

    # -- trials -----------------------------------------------------------------------------

    def trials(
        self, name: str, state: str | None = None, *, page_size: int = TRIALS_PAGE
    ) -> list[TrialPublic]:
        """Every trial of the study (those in `state`, if given), by number, read a page
        at a time."""
        if not 1 <= page_size <= TRIALS_PAGE:
            raise ValueError(f"page_size must be 1..{TRIALS_PAGE}, got {page_size}")
        out: list[TrialPublic] = []
        while True:
            answer = self._json(
                "GET", _study(name, "trials"), state=state, limit=page_size, offset=len(out)
            )
            page = TrialsPublic.model_validate(answer)
            out.extend(page.data)
            # Trials are only ever added, at the end: a short page is the last one.
            if len(page.data) < page_size or len(out) >= page.count:
                return out

    def enqueue(
        self, name: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> list[QueuedTrialPublic]:
        """Queue one parameter set (a mapping) or several (a list, all or none); parameters
        left out are sampled. Each runs once and counts in n_trials (409 past the budget)."""
        if isinstance(params, Mapping):
            body: Any = {"params": dict(params)}
        else:
            body = [{"params": dict(p)} for p in params]
        answer = self._json("POST", _study(name, "trials"), body)
        return QueuedTrialsPublic.model_validate(answer).data

    def dataframe(self, name: str, state: str | None = None) -> pd.DataFrame:
        """One row per trial: the server's CSV export (``GET .../trials?format=csv``) read
        by pandas, its times as UTC timestamps."""
        import pandas as pd

        params = {"format": "csv", **({"state": state} if state is not None else {})}
        response = self.request("GET", _study(name, "trials"), params=params)
        frame = pd.read_csv(io.BytesIO(response.content))
        for column in TIME_COLUMNS:
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        return frame

    # -- results ----------------------------------------------------------------------------

    def importance(self, name: str, evaluator: Evaluator = DEFAULT_EVALUATOR) -> ImportancePublic:
        """Each sampled parameter's share of the metric's variation, with intervals."""
        answer = self._json("GET", _study(name, "importance"), evaluator=evaluator)
        return ImportancePublic.model_validate(answer)

    def analysis(
        self,
        name: str,
        by: str | Sequence[str] = "eta",
        *,
        baseline: str | Sequence[Any] | None = None,
        metric: str | None = None,
    ) -> AnalysisPublic:
        """Runs grouped by the `by` parameters: each group's mean and success rates with
        intervals, compared with the baseline group on shared seeds."""
        answer = self._json(
            "GET",
            _study(name, "analysis"),
            by=_joined(by),
            baseline=None if baseline is None else _joined(baseline),
            metric=metric,
        )
        return AnalysisPublic.model_validate(answer)


def _study(name: str, *rest: str) -> str:
    return "/".join(["/studies", quote(name, safe=""), *rest])


def _joined(values: str | Sequence[Any]) -> str:
    return values if isinstance(values, str) else ",".join(str(v) for v in values)
