"""Named fault points, for the fault-injection tests (``tests/faults/``).

Code that must survive a crash calls ``point("<name>")`` where a crash would hurt most
(after a model version is created, between alias moves, in the middle of a checkpoint
write). Normally that is one dictionary lookup and nothing happens. When the
environment variable ``LSTM_PIPELINE_FAULT`` names the point, the process acts there:

- ``LSTM_PIPELINE_FAULT=<name>`` or ``<name>:kill``: the process kills itself with
  ``SIGKILL`` (no cleanup, no ``finally``: exactly what a lost machine does);
- ``<name>:sleep=<seconds>``: it sleeps, to widen a race window for a concurrency test.

Several points are separated by commas. The variable is read at each call (no state at
import), and never set by the pipeline itself.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "LSTM_PIPELINE_FAULT"


def point(name: str) -> None:
    """Act on ``name`` if ``$LSTM_PIPELINE_FAULT`` asks for it (see the module docstring)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        target, _, action = item.strip().partition(":")
        if target != name:
            continue
        if action.startswith("sleep="):
            time.sleep(float(action[len("sleep=") :]))
        else:
            os.kill(os.getpid(), signal.SIGKILL)
