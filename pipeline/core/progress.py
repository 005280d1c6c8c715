"""Live progress of a long loop (training epochs, baseline fits, replay ticks), terminal or not.

On a terminal (the stream, ``sys.stderr`` by default, ``isatty()``) a tqdm bar redraws one
line in place (it shows the count, elapsed and remaining time, and the latest fields). Anywhere
else (a file, a pipe, CI, an Airflow task log) carriage returns and escape codes would litter
the output, so the same progress is one plain line logged to :data:`LOGGER` at INFO level: the
first update, then at most one every ``every_s`` seconds, and the last. The CLI shows these lines
on stderr at its default verbosity (:func:`show_plain_lines`); an Airflow task logs them, and
``make demo`` echoes them from the task log (``tools/airflow_local.py``).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

#: the logger of the plain progress lines
LOGGER = "pipeline.progress"
log = logging.getLogger(LOGGER)

#: seconds between two plain progress lines, by default
EVERY_S = 10.0


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``) is an interactive terminal; ``False`` when it cannot tell."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _seconds(value: float) -> str:
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{value:.0f}s"


class Progress:
    """Progress of ``total`` units (``None``: unknown), started at ``initial``.

    Args:
        desc: what is counted, e.g. ``"LSTM seed 42"``; the plain line starts with it.
        unit: the unit's name (``"epoch"``, ``"fit"``, ``"tick"``).
        enabled: ``False`` shows nothing (``training.progress``, ``baselines.progress``, ``--no-progress``).
        every_s: seconds between two plain lines (the first and the last are always written).
        stream: where the bar is drawn and whose ``isatty()`` decides bar or lines; default ``sys.stderr``.

    ``update(n, **fields)`` counts ``n`` more units and shows ``fields`` (``train=0.0123``) beside
    the count; ``note(**fields)`` shows progress inside the current unit (a long epoch's batches);
    ``close(**fields)`` ends it, writing a last plain line unless the latest state was
    written already and no new field came with it.
    """

    def __init__(self, total: int | None, desc: str, unit: str, enabled: bool = True, initial: int = 0,
                 every_s: float = EVERY_S, stream: TextIO | None = None) -> None:  # fmt: skip
        self.total, self.desc, self.unit, self.enabled, self.every_s = total, desc, unit, enabled, every_s
        self.n, self.fields = initial, {}
        self.t0, self.last, self.written = time.perf_counter(), None, True
        self.bar = None
        if enabled and on_terminal(stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, file=stream or sys.stderr, dynamic_ncols=True)

    def update(self, n: int = 1, **fields: Any) -> None:
        self.n += n
        self.fields.update(fields)
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            if fields:
                self.bar.set_postfix({k: str(v) for k, v in self.fields.items()})
            return
        now = time.perf_counter()
        self.written = False
        if self.last is None or now - self.last >= self.every_s:
            self._write(now)

    def note(self, **fields: Any) -> None:
        """Progress inside the current unit (``batch="120/450"``): written in a plain line once ``every_s`` passed since
        the last line (or the start: a unit shorter than that shows only its own line), or shown in the bar; not kept
        for the lines after it."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix({k: str(v) for k, v in {**self.fields, **fields}.items()})
            return
        now = time.perf_counter()
        if now - (self.t0 if self.last is None else self.last) >= self.every_s:
            kept, self.fields = self.fields, {**self.fields, **fields}
            try:
                self._write(now)
            finally:
                self.fields = kept

    def line(self, now: float | None = None) -> str:
        """The plain progress line: ``desc: n/total units, field value, ..., <elapsed> elapsed``."""
        elapsed = (time.perf_counter() if now is None else now) - self.t0
        count = f"{self.unit} {self.n}" + (f"/{self.total}" if self.total is not None else "")
        parts = [count, *(f"{k} {v}" for k, v in self.fields.items()), f"{_seconds(elapsed)} elapsed"]
        return f"{self.desc}: " + ", ".join(parts)

    def _write(self, now: float) -> None:
        log.info("%s", self.line(now))
        self.last, self.written = now, True

    def close(self, **fields: Any) -> None:
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and (not self.written or fields):
            self._write(time.perf_counter())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record is emitted (it may be swapped)."""

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def show_plain_lines() -> None:
    """Make the plain progress lines reach stderr as bare lines, whatever the root logging level (the CLI calls it once)."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.propagate = False
