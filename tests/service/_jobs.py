"""Importable job functions for the scheduler tests (apscheduler stores ``module:function``).

``advance_clock`` is one step of a simulated clock: it reads the number of bars the clock
has advanced from a JSON file, works for ``work_s`` seconds, and writes it back + 1 with
the step's start and end (monotonic seconds). Two instances running at once would read
the same bar number (a lost update) and overlap in time.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def advance_clock(path: str, work_s: str) -> int:
    file = Path(path)
    state = json.loads(file.read_text()) if file.is_file() else {"bar": 0, "steps": []}
    started = time.monotonic()
    bar = int(state["bar"])
    time.sleep(float(work_s))
    state["steps"].append({"bar": bar, "start": started, "end": time.monotonic()})
    state["bar"] = bar + 1
    temp = file.with_suffix(".tmp")
    temp.write_text(json.dumps(state))
    os.replace(temp, file)  # atomic: the test reads the file while the job runs
    return bar
