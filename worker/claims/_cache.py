"""What a worker process keeps between claims, in one object that tests can reset.

Each cache saves a query or a validation per claim; none of them is a source of truth: the
database is, and everything here is read again or checked under a lock before it matters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
import sqlalchemy as sa

from search_spaces import StudySpec
from search_spaces.optuna_adapter import cached_storage
from search_spaces.study_rows import StudyRow

# How many studies' loaded objects a worker keeps (an LRU would gain nothing: a fleet
# serves a handful of studies at a time).
MAX_LOADED_STUDIES = 256


@dataclass
class ClaimCaches:
    # One Optuna trial cache per storage, shared by every claim: `load_study` on the bare
    # storage wraps it in a fresh cache each time, and ask() then reads the whole study
    # (claims grew linearly with the study's size). A shared cache reads only what changed
    # since the last claim.
    trial_caches: dict[optuna.storages.RDBStorage, optuna.storages.BaseStorage] = field(
        default_factory=dict
    )
    # A study object per (storage, name, id) to copy per claim: load_study costs a query.
    studies: dict[tuple[optuna.storages.RDBStorage, str, int], optuna.Study] = field(
        default_factory=dict
    )
    # A study's spec changes only by hand (PATCH: n_trials, priority, max_retries), and a
    # study made again under its name has a new created_at: validated once per study and
    # stored version, not once per claim, as stored (specs stored before today's bounds
    # still load: StudySpec.from_stored).
    specs: dict[tuple[str, float], tuple[dict[str, Any], StudySpec]] = field(default_factory=dict)
    # The last list of servable studies per (engine, only), with when it was read.
    candidates: dict[tuple[sa.Engine, str | None], tuple[float, list[StudyRow]]] = field(
        default_factory=dict
    )
    # Per database: RUNNING trials without a claim record, id -> (when this process first
    # saw it, the study's highest reservation id then). See the reaper.
    orphans_seen: dict[str, dict[int, tuple[float, int]]] = field(default_factory=dict)
    # Studies this process cannot load (a task not installed here), warned about once.
    unloadable: set[tuple[str, float]] = field(default_factory=set)

    def reset(self) -> None:
        """Forget everything (tests that rebuild databases under the same URL)."""
        for cache in (self.trial_caches, self.studies, self.specs, self.candidates):
            cache.clear()
        self.orphans_seen.clear()
        self.unloadable.clear()

    def trial_cache(self, storage: optuna.storages.RDBStorage) -> optuna.storages.BaseStorage:
        if storage not in self.trial_caches:
            self.trial_caches[storage] = cached_storage(storage)
        return self.trial_caches[storage]

    def loaded_study(
        self, storage: optuna.storages.RDBStorage, name: str, study_id: int
    ) -> optuna.Study:
        key = (storage, name, study_id)
        if key not in self.studies:
            if len(self.studies) >= MAX_LOADED_STUDIES:
                self.studies.pop(next(iter(self.studies)))
            sampler = optuna.samplers.RandomSampler()  # each copy gets its own
            self.studies[key] = optuna.load_study(
                study_name=name, storage=self.trial_cache(storage), sampler=sampler
            )
        return self.studies[key]

    def spec(self, row: StudyRow) -> StudySpec:
        key = (row.name, row.created_at)
        cached = self.specs.get(key)
        if cached is None or cached[0] != row.spec:
            cached = self.specs[key] = (row.spec, StudySpec.from_stored(row.spec))
        return cached[1]


caches = ClaimCaches()
