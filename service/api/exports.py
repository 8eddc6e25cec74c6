"""A study's trials as a file download: service.export's chunks, streamed as they are made."""

from __future__ import annotations

from fastapi.responses import StreamingResponse
from optuna.storages import RDBStorage

from service.export import MEDIA_TYPES, ExportFormat, export_trials


def streamed(
    storage: RDBStorage, name: str, fmt: ExportFormat, state: str | None
) -> StreamingResponse:
    """The export as a streamed answer, offered as ``NAME-trials.csv`` (or ``.jsonl``).

    The study is looked up before the answer starts, so an unknown one is a plain 404.
    """
    chunks = export_trials(storage, name, fmt, state)
    return StreamingResponse(
        chunks,
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}-trials.{fmt}"'},
    )
