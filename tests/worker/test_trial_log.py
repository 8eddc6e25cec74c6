"""What a trial's log keeps: its own thread's output, the last 1 MiB, the traceback last."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

from search_spaces.trial_logs import MAX_LOG_BYTES, TrialLog
from worker.trial_log import TrialOutput


def test_only_the_trainers_thread_is_kept_and_still_reaches_the_worker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = TrialOutput([])
    with output.capturing():
        print("from the trainer")
        print("to stderr", file=sys.stderr)
        logging.getLogger("user.code").error("a logged error")
        logging.getLogger("noisetune.worker").warning("the worker's own line")
        other = threading.Thread(target=lambda: print("from the heartbeat thread"))
        other.start()
        other.join()
    print("after the trainer")
    text = output.text()
    assert "from the trainer\n" in text and "to stderr\n" in text
    assert "ERROR user.code: a logged error" in text
    assert "the worker's own line" not in text
    assert "heartbeat" not in text and "after the trainer" not in text
    seen = capsys.readouterr()
    assert "from the trainer" in seen.out and "from the heartbeat thread" in seen.out


def test_the_log_keeps_the_last_mebibyte_and_says_what_it_dropped() -> None:
    output = TrialOutput([])
    line = "x" * 1023 + "\n"  # 1 KiB
    for _ in range(3 * 1024):  # 3 MiB
        output.write(line)
    try:
        raise ValueError("at the end")
    except ValueError as exc:
        output.add_traceback(exc)
    text = output.text()
    assert len(text.encode()) <= MAX_LOG_BYTES
    assert output.dropped_bytes + len(text.encode()) > 3 * 2**20
    assert text.rstrip().endswith("ValueError: at the end")
    rendered = TrialLog(text, output.dropped_bytes, 0.0).render()
    assert rendered.startswith(f"[... {output.dropped_bytes} earlier bytes dropped")
    assert TrialLog("short", 0, 0.0).render() == "short"
