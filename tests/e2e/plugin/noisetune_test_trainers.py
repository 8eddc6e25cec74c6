"""Trainers of the test tasks that import fine (see noisetune_test_tasks)."""

from __future__ import annotations

import logging
import sys
from typing import Any


def prints_then_raises(config: dict[str, Any], *, report: Any = None, **_: Any) -> dict[str, Any]:
    print("loading the data: 1797 images")
    print("a warning on stderr", file=sys.stderr)
    logging.getLogger("my_trainer").warning("learning rate looks large")
    if report is not None:
        report(1, {"loss": 1.0, "steps": 3})
    raise ValueError("the loss went negative at step 3")


def spins(config: dict[str, Any], **_: Any) -> dict[str, Any]:
    print("spinning", flush=True)  # tests wait for it: the trainer has started
    while True:  # a trainer stuck in a Python loop, reporting nothing
        pass
