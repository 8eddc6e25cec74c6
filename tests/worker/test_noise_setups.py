"""Trials train with their whole noise setup: families, windows, placement and scale."""

from __future__ import annotations

import pytest

from search_spaces import NoiseSetup, StudySpec, resolve_trial
from worker.stacked import StackMember
from worker.tasks import deep_mlp
from worker.tasks.deep_mlp_stacked import train_stacked

TINY = {"dataset": "digits", "depth": 4, "width": 16, "epochs": 3, "lr": 0.05, "seed": 2,
        "clip": 1.0}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_papers_setup_is_what_eta_and_gamma_always_trained() -> None:
    plain = deep_mlp.train(TINY, eta=0.3, gamma=0.55)
    assert deep_mlp.train(TINY, eta=0.3, gamma=0.55, noise=NoiseSetup(0.3, 0.55)) == plain
    cosine = NoiseSetup(0.3, schedule="cosine", horizon=20)
    assert deep_mlp.train(TINY, eta=0.3, gamma=0.55, noise=cosine) != plain


@pytest.mark.parametrize(
    "setup",
    [
        NoiseSetup(1.0, schedule="cosine", horizon=40, window=25, placement="before_clip"),
        NoiseSetup(0.3, schedule="exponential", half_life=7.5),
        NoiseSetup(0.3, schedule="linear", horizon=30, scale="relative"),
    ],
    ids=["cosine-window-before-clip", "exponential", "linear-relative"],
)
def test_a_stack_of_one_trains_what_the_lone_run_trains(setup: NoiseSetup) -> None:
    lone = deep_mlp.train(TINY, eta=setup.eta, gamma=setup.gamma, noise=setup)
    (stacked,) = train_stacked([StackMember(TINY, setup.eta, setup.gamma, noise=setup)])
    if setup.scale == "absolute":
        assert stacked == lone  # bit for bit
    else:  # the stack batches the gradient norms that scale the noise
        assert stacked["val_loss"] == pytest.approx(lone["val_loss"], rel=1e-5)


def test_members_of_one_stack_must_share_the_placement() -> None:
    members = [
        StackMember(TINY, 0.3, 0.55, noise=NoiseSetup(0.3)),
        StackMember(TINY, 0.3, 0.55, noise=NoiseSetup(0.3, placement="before_clip")),
    ]
    with pytest.raises(ValueError, match="share the noise placement"):
        train_stacked(members)


def test_a_trials_values_resolve_into_its_setup() -> None:
    spec = StudySpec.model_validate(
        {"name": "s", "task": "quadratic", "search_space": "schedules", "n_trials": 5}
    )
    setup = resolve_trial(spec, {"schedule": "exponential", "eta": 0.3, "half_life": 200})
    assert setup.noise == NoiseSetup(0.3, schedule="exponential", half_life=200)
    assert setup.noise.as_params() == {"schedule": "exponential", "eta": 0.3, "half_life": 200}
    assert not setup.noise.is_paper and NoiseSetup(0.3).is_paper
    assert resolve_trial(spec, {"schedule": "polynomial", "eta": 1.0, "gamma": 0.6}).gamma == 0.6


def test_bad_setups_are_refused_with_their_name() -> None:
    with pytest.raises(ValueError, match="schedule must be one of polynomial"):
        NoiseSetup(0.3, schedule="sawtooth")
    with pytest.raises(ValueError, match="needs horizon"):
        NoiseSetup(0.3, schedule="cosine")
    with pytest.raises(ValueError, match="placement must be one of"):
        NoiseSetup(0.3, placement="sideways")
