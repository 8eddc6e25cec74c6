"""Claiming, finishing and recovering trials: the worker's side of the database contract.

- ``_budget``: a study's budget, the claim lock, which studies can be served;
- ``_claim``: what a claimed trial is (``Claim``) and its study's spec;
- ``_claiming``: reserve slots, ask Optuna, record the claims;
- ``_outcomes``: record a trial's result or failure, and the retry rule;
- ``_reaper``: fail and requeue the trials of lost workers, and orphaned asks;
- ``_cache``: what a process keeps between claims (``caches``, which tests can reset).
"""

from search_spaces.study_rows import claim_lock_key
from worker.claims._budget import CANDIDATES_TTL_S, servable_studies, unfinished_studies
from worker.claims._cache import ClaimCaches, caches
from worker.claims._claim import Claim, can_stack, study_spec
from worker.claims._claiming import claim_trial, claim_trials, suggest_all
from worker.claims._outcomes import (
    fail_and_maybe_retry,
    finish_trial,
    first_attempt,
    next_attempt,
    requeue,
)
from worker.claims._reaper import reap_lost_trials, release_own_trials

__all__ = [
    "CANDIDATES_TTL_S",
    "Claim",
    "ClaimCaches",
    "can_stack",
    "caches",
    "claim_lock_key",
    "claim_trial",
    "claim_trials",
    "fail_and_maybe_retry",
    "finish_trial",
    "first_attempt",
    "next_attempt",
    "reap_lost_trials",
    "release_own_trials",
    "requeue",
    "servable_studies",
    "study_spec",
    "suggest_all",
    "unfinished_studies",
]
