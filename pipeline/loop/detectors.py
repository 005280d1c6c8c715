"""The ``cusum`` monitoring rule in the check: the champion's own detector on the live scores.

The detector (``k``, the decision interval ``h``, the in-control mean and long-run standard
deviation of the relative loss differential) was calibrated when the champion was registered
and travels as its ``cusum.*`` version tags (:mod:`pipeline.evaluation.cusum`). A check:

1. takes the champion's complete origins in ``[T - monitoring.window, T)`` (all ``h`` targets
   observed, the reference forecast defined), every ``origin_step``-th one as in calibration;
2. computes ``r_t``, the relative loss differential against the reference the detector was calibrated
   against (its ``cusum.reference`` tag: ``monitoring.naive_model``, resolved at registration);
3. continues the CUSUM from the state the last check of the same champion left (its statistic
   and last origin, kept in that check's row of the forecast store, ``payload.cusum``) over the
   origins after that one. No such check (a new champion, a first check, a rule switched on):
   the statistic starts at 0 from the window's first origin. So the statistic resets when the
   champion changes, and a rerun of a check (it reads only checks before ``T``) gives the same
   number. It is not reset by a signal: it decays by at least ``k`` per in-control origin,
   and the cooldown and canary guards hold repeated triggers.
4. When the champion also has a fast limb (``cusum.fast.*`` tags, ``monitoring.cusum_fast_shift``)
   the same is done for it on the same origins, its statistic carried in ``payload.cusum.fast``;
   the check signals when either limb does (a combined scheme, Lucas 1982; docs/LOOP.md 10.2).

Why the state lives in the check rows rather than being recomputed from every score since the
promotion: the reference forecast needs the observations, and a check reads only one window
of them; the check row is written last (after the MLflow run), so a failed check leaves no
state behind and the next check resumes from the last good one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import schema
from pipeline.core.errors import MonitoringError
from pipeline.evaluation.cusum import FAST_PREFIX, TAG_PREFIX, CusumDetector, cusum_path, relative_differential
from pipeline.evaluation.origins import on_grid


def detector_of(tags: dict[str, str], name: str, version: int) -> CusumDetector:
    """The champion's calibrated detector from its version tags.

    Raises:
        MonitoringError: the version has no (complete) ``cusum.*`` tags, naming why and the fix.
    """
    if TAG_PREFIX + "error" in tags:
        raise MonitoringError(
            f"model {name!r} version {version} has no CUSUM detector: its calibration failed at registration ({tags[TAG_PREFIX + 'error']}). "
            "Fix: use another monitoring.rule for this version, or register one with more test origins."
        )
    try:
        return CusumDetector.from_tags(tags)
    except (KeyError, ValueError) as exc:
        raise MonitoringError(
            f"model {name!r} version {version} has no usable CUSUM detector tags (missing or malformed {exc}); monitoring.rule 'cusum' "
            "reads the detector calibrated at registration. Fix: register a version with monitoring.rule: cusum "
            "(`lstm-pipeline train --config ...`) and make it champion, or use another rule."
        ) from exc


def fast_limb_of(tags: dict[str, str], name: str, version: int) -> CusumDetector | None:
    """The champion's fast limb (``cusum.fast.*`` tags), or ``None`` for a version registered without one.

    Raises:
        MonitoringError: the tags are there but incomplete or malformed.
    """
    if not any(key.startswith(FAST_PREFIX) for key in tags):
        return None
    try:
        return CusumDetector.from_tags(tags, FAST_PREFIX)
    except (KeyError, ValueError) as exc:
        raise MonitoringError(
            f"model {name!r} version {version} has malformed fast-limb CUSUM tags ({FAST_PREFIX}*: missing or malformed {exc}). "
            "Fix: register the version again (`lstm-pipeline train --config ...`), or set monitoring.rule to another rule."
        ) from exc


def origin_losses(frame: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Per-origin mean squared error of the champion (``yhat``) and the reference (``naive``).

    Args:
        frame: ``unique_id, origin, step, yhat, y, naive`` rows (scored forecasts with the
            reference forecast of each row, original units).

    Returns:
        Frame indexed by sorted ``origin`` with ``loss_model, loss_reference``, over the origins
        whose every series has all ``horizon`` steps scored and a finite reference.
    """
    if frame.empty:
        return pd.DataFrame(columns=["loss_model", "loss_reference"], index=pd.DatetimeIndex([], name="origin"))
    per = frame.groupby([schema.UNIQUE_ID, "origin"])
    ok = (per["step"].transform("size") == horizon) & per["naive"].transform(lambda v: bool(np.isfinite(v).all()))
    both = frame[ok.to_numpy(dtype=bool)]
    errs = both.assign(loss_model=(both["yhat"] - both["y"]) ** 2, loss_reference=(both["naive"] - both["y"]) ** 2)
    return errs.groupby("origin")[["loss_model", "loss_reference"]].mean().sort_index()


def previous_state(previous: list[dict], version: int, limb: str | None = None) -> tuple[float, pd.Timestamp | None]:
    """``(statistic, last origin)`` the latest earlier check of champion ``version`` left; ``(0, None)`` if none.

    ``previous``: check rows, newest first. A row of another champion ends the search (reset).
    ``limb``: ``None`` for the CUSUM itself, ``"fast"`` for its fast limb (0 where that check
    ran without one, from the same last origin).
    """
    for check in previous:
        if check.get("champion_version") != version:
            break
        state = check.get("cusum")
        if state and state.get("last_origin"):
            value = state["statistic"] if limb is None else (state.get(limb) or {}).get("statistic", 0.0)
            return float(value), pd.Timestamp(state["last_origin"])
    return 0.0, None


def _limb(detector: CusumDetector, r: np.ndarray, start: float) -> dict[str, Any]:
    path = cusum_path(detector.standardise(r), detector.k, start)
    statistic = float(path[-1]) if len(path) else start
    peak = float(max(start, path.max())) if len(path) else start
    return {"statistic": statistic, "max_statistic": peak, "h": detector.h, "k": detector.k, "clip": detector.clip if np.isfinite(detector.clip) else None,
            "alarm": bool(peak > detector.h),
            "carried": start}  # fmt: skip


def cusum_update(detector: CusumDetector, frame: pd.DataFrame, horizon: int, step: pd.Timedelta, previous: list[dict], version: int,
                 fast: CusumDetector | None = None) -> dict[str, Any]:  # fmt: skip
    """This check's CUSUM state: the statistic after the new origins and whether it signalled.

    Args:
        detector: the champion's (:func:`detector_of`). frame: the champion's scored rows of the
            window with the reference forecast (``naive``), see :func:`origin_losses`.
        horizon: ``h``. step: one step of ``data.freq``. previous: earlier check rows, newest first.
        version: the champion's version. fast: its fast limb (:func:`fast_limb_of`), if any.

    Returns:
        ``statistic`` (after the last new origin), ``max_statistic`` (over the new origins and the
        carried value), ``h``, ``k``, ``clip``, ``alarm`` (either limb's ``max_statistic > h``),
        ``last_origin`` (ISO), ``n_new`` (origins added), ``carried`` (the statistic it started
        from), ``arl0``, ``version``, ``reference``, ``limbs`` (the limbs that signalled:
        ``["slow"]``, ``["fast"]``, both or none); with a fast limb, ``fast``: its ``statistic,
        max_statistic, h, k, clip, alarm, carried``.
    """
    losses = origin_losses(frame, horizon)
    start, last = previous_state(previous, version)
    origins = pd.DatetimeIndex(losses.index)
    r = relative_differential(origins.to_numpy(), losses["loss_model"], losses["loss_reference"], detector.window) if len(origins) else np.empty(0)
    new = on_grid(origins, step, detector.origin_step, detector.phase) & (origins > last if last is not None else True)
    slow = _limb(detector, r[new], start)
    last_new = origins[new][-1] if new.any() else last
    out = {
        **slow, "last_origin": None if last_new is None else last_new.isoformat(), "n_new": int(new.sum()),
        "arl0": detector.arl0, "version": version, "reference": detector.reference, "limbs": ["slow"] if slow["alarm"] else [],
    }  # fmt: skip
    if fast is not None:
        out["fast"] = _limb(fast, r[new], previous_state(previous, version, "fast")[0])
        out["limbs"] += ["fast"] if out["fast"]["alarm"] else []
        out["alarm"] = bool(out["limbs"])
    return out
