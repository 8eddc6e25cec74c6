"""`noisetune report`: one self-contained HTML file with a study's plots and trials.

The file carries plotly.js, the stylesheet, every figure and the trials table inline, so it
opens from disk or an e-mail attachment with no server and no network.
"""

from __future__ import annotations

import math
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from optuna.trial import FrozenTrial

from search_spaces import trial_attrs
from search_spaces.storage import open_storage, resolve_url
from service import studies
from service.analysis_table import effect_table
from service.pages import EFFECT, PAGE_PLOTS, PLOTLY_JS, STATIC, WIDE_PLOTS, templates
from service.plots import build_figure, compute_info, draw_figure, study_snapshot
from service.plots._importance import ImportanceInfo
from service.plots._snapshot import StudySnapshot, TooFew


def _json_in_script(text: str) -> str:
    """JSON that cannot end the <script> element holding it: `<` only occurs in strings."""
    return text.replace("<", "\\u003c")


def _js_in_script(code: str) -> str:
    # "</script" can only sit inside a string or regex literal, where "<\/" means the same.
    return re.sub(r"</(script)", r"<\\/\1", code, flags=re.IGNORECASE)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _trial_row(t: FrozenTrial, params: list[str]) -> dict[str, Any]:
    start, end = t.datetime_start, t.datetime_complete
    duration = (end - start).total_seconds() if start and end else None
    attrs = t.user_attrs
    return {
        "number": t.number,
        "state": t.state.name,
        "value": _cell(t.value if t.values else None),
        "params": [_cell(t.params.get(p)) for p in params],
        "duration": "—" if duration is None else f"{duration:.1f} s",
        "worker": attrs.get(trial_attrs.WORKER) or "—",
        "device": attrs.get(trial_attrs.DEVICE) or "—",
        "start": start.strftime("%Y-%m-%d %H:%M:%S") if start else "—",
        "fail_reason": attrs.get(trial_attrs.FAIL_REASON) or "",
    }


def _params(snap: StudySnapshot) -> list[str]:
    return [p for p in snap.param_names if any(p in t.params for t in snap.trials)]


def _notes(snap: StudySnapshot, kind: str) -> tuple[str, ...]:
    """What the page shows beside a plot: the importance ranking's notes (cached)."""
    if kind != "importance":
        return ()
    info = compute_info(snap, kind)
    return info.notes if isinstance(info, ImportanceInfo) else ()


def render_report(storage_url: str, name: str) -> str:
    """The report's HTML; raises `StudyNotFound` (a LookupError naming the study)."""
    storage = open_storage(storage_url)
    study = studies.get_study(storage, name).model_dump(mode="json")
    snap = study_snapshot(storage, name)
    figures = [
        {
            "kind": kind,
            "wide": kind in WIDE_PLOTS,
            "json": _json_in_script(build_figure(snap, kind).to_json()),
            "notes": _notes(snap, kind),
        }
        for kind in PAGE_PLOTS
    ]
    params = _params(snap)
    info = compute_info(snap, EFFECT)
    effect = {
        "json": _json_in_script(draw_figure(EFFECT, info).to_json()),
        "table": None if isinstance(info, TooFew) else effect_table(info),
    }
    template = templates.get_template("report.html")
    return template.render(
        study=study,
        name=name,
        figures=figures,
        effect=effect,
        params=params,
        trials=[_trial_row(t, params) for t in snap.trials],
        plotly_js=_js_in_script(PLOTLY_JS.read_text(encoding="utf-8")),
        css=(STATIC / "app.css").read_text(encoding="utf-8"),
        # Leaf lists and mappings inline: a spec reads best as short YAML.
        spec=yaml.safe_dump(study["spec"], sort_keys=False, default_flow_style=None, width=60),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def write_report(name: str, output: str | os.PathLike[str], storage: str | None = None) -> int:
    """Write the report of study `name` to `output`; 0 on success.

    Reads the database directly (`storage`, else ``NOISETUNE_STORAGE``, else ./noisetune.db).
    An unknown study raises `service.studies.StudyNotFound`, whose message names it.
    """
    html = render_report(resolve_url(storage), name)
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return 0
