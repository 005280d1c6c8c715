"""The canary decision: is the challenger measurably better than the champion on live data?

Pure computation on paired scores (origins that both versions forecast and that have
been observed since); no registry, no store, no clock. :mod:`pipeline.loop.promotion` turns a
decision into alias moves.

The test is Diebold and Mariano's (1995) on the per-origin loss differential
``d_t = L_candidate(t) - L_incumbent(t)``, where ``L(t)`` is the squared error of the
``h``-step forecast from origin ``t``, averaged over its steps (and series). Forecasts
from consecutive origins overlap by ``h - 1`` steps, so ``d_t`` is MA(h-1) under the
null and the long-run variance sums the autocovariances up to lag ``h - 1``
(rectangular window, DM 1995 eq. 5). The statistic carries the small-sample correction
of Harvey, Leybourne and Newbold (1997, eq. 9) and is compared with Student's t with
``n - 1`` degrees of freedom. The computation is the maintained ``dieboldmariano``
package (PyPI, E. Annunziata), which implements exactly this; R's
``forecast::dm.test(varestimator="acf")`` is the same test.

References:
    Diebold, F.X. and Mariano, R.S. (1995). Comparing predictive accuracy. Journal of
    Business & Economic Statistics 13(3), 253-263.
    Harvey, D., Leybourne, S. and Newbold, P. (1997). Testing the equality of prediction
    mean squared errors. International Journal of Forecasting 13(2), 281-291.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from pipeline.core.errors import DataQualityError

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.core.config import CanaryConfig

Action = Literal["promote", "reject", "wait", "rollback", "keep"]


@dataclass(frozen=True)
class DMResult:
    """One-sided Diebold-Mariano test of "the candidate has lower expected loss".

    Attributes:
        statistic: HLN-corrected DM statistic; negative when the candidate's mean loss is lower.
        p_better: one-sided p-value of H1 "candidate more accurate" (``P(t_{n-1} <= stat)``).
        p_worse: one-sided p-value of H1 "candidate less accurate" (``1 - p_better``).
        n: number of loss differentials (origins).
        lags: autocovariance lags used (``h - 1``; 0 after the fallback below).
        note: empty, or why the test fell back (non-positive long-run variance).
    """

    statistic: float
    p_better: float
    p_worse: float
    n: int
    lags: int
    note: str = ""


def dm_test(loss_candidate, loss_incumbent, h: int = 1) -> DMResult:
    """Diebold-Mariano test with the HLN correction on two per-origin loss series.

    Args:
        loss_candidate, loss_incumbent: ``(n,)`` float, the loss of each version at the
            same ``n`` consecutive origins (e.g. squared error averaged over the ``h`` steps).
        h: forecast horizon in origins' steps; the long-run variance uses ``h - 1`` lags.

    Returns:
        :class:`DMResult`. When the ``h - 1``-lag variance estimate is not positive (it
        can be negative for ``h > 1`` in short samples) the test is redone with ``h = 1``,
        as R's ``forecast::dm.test`` does, and ``note`` says so. When the differential is
        constant the variance is zero: the sign of its mean decides (p 0 or 1).

    Raises:
        DataQualityError: lengths differ, a loss is not finite, or ``n <= 2h`` (the HLN
            factor ``sqrt((n + 1 - 2h + h(h-1)/n) / n)`` is not defined).
    """
    from dieboldmariano import NegativeVarianceException, ZeroVarianceException
    from dieboldmariano import dm_test as _dm

    cand, inc = np.asarray(loss_candidate, dtype=float), np.asarray(loss_incumbent, dtype=float)
    n = len(cand)
    if len(inc) != n:
        raise DataQualityError(f"Diebold-Mariano test: expected equal numbers of origins, found {n} and {len(inc)}")
    if not (np.isfinite(cand).all() and np.isfinite(inc).all()):
        raise DataQualityError("Diebold-Mariano test: a per-origin loss is NaN or infinite")
    if n <= 2 * h:
        raise DataQualityError(f"Diebold-Mariano test with horizon h={h} needs more than {2 * h} origins, found {n}")
    zeros, note = [0.0] * n, ""
    for lag_h in (h, 1):
        try:
            stat, p = _dm(zeros, cand.tolist(), inc.tolist(), loss=lambda _y, loss: loss, h=lag_h, one_sided=True, variance_estimator="acf")
            break
        except ZeroVarianceException:  # a constant differential: its sign is the whole answer
            mean = float(np.mean(cand - inc))
            stat = math.copysign(math.inf, mean) if mean else 0.0
            return DMResult(stat, 0.0 if mean < 0 else 1.0, 0.0 if mean > 0 else 1.0, n, lag_h - 1, "zero variance")
        except NegativeVarianceException:  # possible for h > 1 only: autocovariances can be negative
            note = f"long-run variance with {h - 1} lags was not positive; used lag 0 (as R forecast::dm.test)"
    return DMResult(float(stat), float(p), float(1.0 - p), n, lag_h - 1, note)


def per_origin_losses(paired: pd.DataFrame) -> pd.DataFrame:
    """Mean squared error of each version at each origin.

    Args:
        paired: one row per ``(unique_id, origin, step)`` scored by both versions, with
            columns ``origin``, ``y``, ``yhat_a`` (incumbent: champion) and ``yhat_b``
            (candidate: challenger), in original units. Rows with a missing value are dropped.

    Returns:
        Frame indexed by sorted ``origin`` with ``sse_a, sse_b`` (sums of squared errors),
        ``count`` (scored points) and ``loss_a, loss_b`` (their means).

    Raises:
        DataQualityError: a required column is missing.
    """
    missing = {"origin", "y", "yhat_a", "yhat_b"} - set(paired.columns)
    if missing:
        raise DataQualityError(f"paired scores: expected columns origin, y, yhat_a, yhat_b; missing {sorted(missing)}")
    frame = paired.dropna(subset=["y", "yhat_a", "yhat_b"])
    errs = frame.assign(sse_a=(frame["y"] - frame["yhat_a"]) ** 2, sse_b=(frame["y"] - frame["yhat_b"]) ** 2)
    out = errs.groupby("origin").agg(sse_a=("sse_a", "sum"), sse_b=("sse_b", "sum"), count=("y", "size")).sort_index()
    return out.assign(loss_a=out["sse_a"] / out["count"], loss_b=out["sse_b"] / out["count"])


@dataclass(frozen=True)
class CanaryDecision:
    """A canary verdict with every number it used.

    ``action``: ``promote`` / ``reject`` / ``wait`` (challenger vs champion, :func:`decide`)
    or ``rollback`` / ``keep`` / ``wait`` (new champion vs previous, :func:`decide_rollback`).
    RMSEs are over all scored points (steps, series) of the paired origins, original units;
    ``improvement = 1 - rmse_b / rmse_a`` (positive: the candidate is better).
    """

    action: Action
    reason: str
    n_origins: int
    rmse_a: float
    rmse_b: float
    improvement: float
    dm_statistic: float
    p_better: float
    p_worse: float
    horizon: int
    lags: int
    min_origins: int
    max_origins: int
    min_improvement: float
    alpha: float
    first_origin: str = ""
    last_origin: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def tags(self, prefix: str = "canary_") -> dict[str, str]:
        """The numbers as MLflow tag values (strings), keys prefixed, ``reason`` excluded."""
        skip = {"action", "reason"}
        return {f"{prefix}{k}": (f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in self.as_dict().items() if k not in skip}


def _horizon(paired: pd.DataFrame, horizon: int | None) -> int:
    if horizon is not None:
        return int(horizon)
    return int(paired["step"].max()) if "step" in paired.columns and len(paired) else 1


def _numbers(losses: pd.DataFrame, h: int) -> tuple[float, float, float, DMResult | None, str]:
    count = losses["count"].sum()
    rmse_a = math.sqrt(losses["sse_a"].sum() / count) if count else math.nan
    rmse_b = math.sqrt(losses["sse_b"].sum() / count) if count else math.nan
    improvement = 1.0 - rmse_b / rmse_a if rmse_a > 0 else (0.0 if rmse_b == rmse_a else -math.inf)
    if len(losses) <= 2 * h:
        return rmse_a, rmse_b, improvement, None, f"{len(losses)} paired origins; the DM test needs more than 2h = {2 * h}"
    return rmse_a, rmse_b, improvement, dm_test(losses["loss_b"], losses["loss_a"], h), ""


def _decision(action: Action, reason: str, losses, h: int, nums, cfg: CanaryConfig) -> CanaryDecision:
    rmse_a, rmse_b, improvement, dm, _ = nums
    origins = losses.index
    return CanaryDecision(
        action=action, reason=reason, n_origins=len(losses), rmse_a=rmse_a, rmse_b=rmse_b, improvement=improvement,
        dm_statistic=dm.statistic if dm else math.nan, p_better=dm.p_better if dm else math.nan,
        p_worse=dm.p_worse if dm else math.nan, horizon=h, lags=dm.lags if dm else h - 1,
        min_origins=cfg.min_origins, max_origins=cfg.max_origins, min_improvement=cfg.min_improvement, alpha=cfg.alpha,
        first_origin=str(origins[0]) if len(origins) else "", last_origin=str(origins[-1]) if len(origins) else "",
    )  # fmt: skip


def decide(paired: pd.DataFrame, cfg: CanaryConfig, horizon: int | None = None) -> CanaryDecision:
    """Promote, reject or keep waiting: challenger (``b``) against champion (``a``).

    Args:
        paired: paired scores, see :func:`per_origin_losses` (``a`` = champion, ``b`` =
            challenger); only origins both versions scored.
        cfg: the ``canary`` config section.
        horizon: forecast steps ``h``; default the largest ``step`` in ``paired``.

    Rules (LOOP.md section 5), in order, with ``n`` paired origins:
        - promote: ``n >= min_origins``, ``rmse_b <= (1 - min_improvement) x rmse_a`` and
          the one-sided DM p-value of "b better" ``< alpha``;
        - reject: ``n >= min_origins`` and the one-sided p-value of "b worse" ``< alpha``;
        - reject: ``n >= max_origins`` without a significant win;
        - otherwise wait. The DM test needs ``n > 2h``; before that the decision waits.
    """
    h = _horizon(paired, horizon)
    losses = per_origin_losses(paired)
    nums = _numbers(losses, h)
    rmse_a, rmse_b, improvement, dm, why_no_test = nums
    n = len(losses)
    summary = f"{n} paired origins, RMSE challenger {rmse_b:.4g} vs champion {rmse_a:.4g} ({improvement:+.1%})"
    if dm is not None:
        summary += f", DM {dm.statistic:.3g} (p better {dm.p_better:.3g}, p worse {dm.p_worse:.3g}, alpha {cfg.alpha})"
    if dm is None:
        return _decision("wait", f"wait: {why_no_test}", losses, h, nums, cfg)
    if n >= cfg.min_origins and improvement >= cfg.min_improvement and dm.p_better < cfg.alpha:
        return _decision("promote", f"promote: significantly better on {summary}", losses, h, nums, cfg)
    if n >= cfg.min_origins and dm.p_worse < cfg.alpha:
        return _decision("reject", f"reject: significantly worse on {summary}", losses, h, nums, cfg)
    if n >= cfg.max_origins:
        return _decision("reject", f"reject: no significant win of {cfg.min_improvement:.0%} after max_origins={cfg.max_origins}: {summary}", losses, h, nums, cfg)
    if n < cfg.min_origins:
        return _decision("wait", f"wait: {n} of min_origins={cfg.min_origins}; {summary}", losses, h, nums, cfg)
    return _decision("wait", f"wait: not yet significant; {summary}", losses, h, nums, cfg)


def decide_rollback(paired: pd.DataFrame, cfg: CanaryConfig, horizon: int | None = None) -> CanaryDecision:
    """Roll back, keep, or keep watching: new champion (``b``) against the previous one (``a``).

    Args:
        paired: paired scores on origins since the promotion (``a`` = ``previous_champion``,
            ``b`` = ``champion``), see :func:`per_origin_losses`.

    Rules: ``rollback`` when ``n >= min(min_origins, rollback_origins)`` and the one-sided
    DM p-value of "b worse" is ``< alpha`` (no size threshold: a significant loss is
    enough to undo a promotion); ``keep`` once ``n >= rollback_origins`` without that
    (the watch is over); otherwise ``wait``.
    """
    h = _horizon(paired, horizon)
    losses = per_origin_losses(paired)
    nums = _numbers(losses, h)
    rmse_a, rmse_b, improvement, dm, why_no_test = nums
    n, needed = len(losses), min(cfg.min_origins, cfg.rollback_origins)
    summary = f"{n} origins since promotion, RMSE champion {rmse_b:.4g} vs previous champion {rmse_a:.4g} ({improvement:+.1%})"
    if dm is not None:
        summary += f", DM {dm.statistic:.3g} (p worse {dm.p_worse:.3g}, alpha {cfg.alpha})"
    if dm is not None and n >= needed and dm.p_worse < cfg.alpha:
        return _decision("rollback", f"rollback: champion significantly worse than previous champion on {summary}", losses, h, nums, cfg)
    if n >= cfg.rollback_origins:
        return _decision("keep", f"keep: not significantly worse after rollback_origins={cfg.rollback_origins}; {summary}", losses, h, nums, cfg)
    return _decision("wait", f"wait: {why_no_test or summary}", losses, h, nums, cfg)
