"""The shared vocabulary of noisetune: search spaces, study specs and task definitions.

Plain data with no torch import: the service validates studies with it and the workers
rebuild studies from it.
"""

from search_spaces._builtin import BUILTIN_SPACES, builtin_space_names, resolve_search_space
from search_spaces._optimizer_options import PRUNER_OPTIONS, SAMPLER_OPTIONS, allowed_options
from search_spaces._optuna_builders import build_pruner, build_sampler
from search_spaces._params import (
    CategoricalParam,
    FloatParam,
    IntParam,
    SearchSpace,
    SearchSpaceError,
    parse_search_space,
)
from search_spaces._resources import ResourceEstimate
from search_spaces._seeds import derived_seed
from search_spaces._study_spec import (
    NOISE_PARAMS,
    PrunerSpec,
    SamplerSpec,
    StudySpec,
    SuccessSpec,
    TrialSetup,
    WarmStartSpec,
    layered,
    resolve_trial,
)
from search_spaces._tasks import (
    BINARY_ARITH,
    DEEP_MLP,
    QUADRATIC,
    BinaryArithConfig,
    DeepMLPConfig,
    QuadraticConfig,
    TaskConfig,
    TaskConfigError,
    TaskDefinition,
    get_task_definition,
    task_definitions,
)
from search_spaces._worst_case import ResourceLimitError, check_resources, estimate_resources
from search_spaces.noise_setup import NOISE_DEFAULTS, NoiseSetup

__all__ = [
    "BINARY_ARITH",
    "BUILTIN_SPACES",
    "DEEP_MLP",
    "NOISE_DEFAULTS",
    "NOISE_PARAMS",
    "NoiseSetup",
    "PRUNER_OPTIONS",
    "QUADRATIC",
    "SAMPLER_OPTIONS",
    "BinaryArithConfig",
    "CategoricalParam",
    "DeepMLPConfig",
    "FloatParam",
    "IntParam",
    "PrunerSpec",
    "QuadraticConfig",
    "ResourceEstimate",
    "ResourceLimitError",
    "SamplerSpec",
    "SearchSpace",
    "SearchSpaceError",
    "StudySpec",
    "SuccessSpec",
    "TaskConfig",
    "TaskConfigError",
    "TaskDefinition",
    "TrialSetup",
    "WarmStartSpec",
    "allowed_options",
    "build_pruner",
    "build_sampler",
    "builtin_space_names",
    "check_resources",
    "derived_seed",
    "estimate_resources",
    "get_task_definition",
    "layered",
    "parse_search_space",
    "resolve_search_space",
    "resolve_trial",
    "task_definitions",
]
