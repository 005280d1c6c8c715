"""Data drift of the target and covariates: Evidently 0.7, distance methods with thresholds.

The reference is the champion version's training part (its ``reference.parquet``
artifact, original units); the current data is the observations of the monitoring
window ``[T - monitoring.window, T)``. One Evidently ``Report([DataDriftPreset(...)])``
computes a drift score per column; a column drifted when its score reaches its
threshold, and the dataset drifted when at least ``monitoring.drift_share`` of its
columns did.

Why distances, not p-values: a statistical test answers "are these two samples from
exactly the same distribution?", and with a 30,000-row reference and a week of hourly
rows it answers "no" for differences far too small to matter (the KS test's power
grows with sample size, so its p-value goes to 0 for any fixed, trivial shift).
Evidently itself switches to distances above 1,000 rows for that reason. We fix them:

* numeric columns: the **normed Wasserstein distance** (earth mover's distance divided
  by the reference's standard deviation; drift at >= 0.2 by default, i.e. a fifth of a
  standard deviation of mass moved), which is stable in the sample size and reads in
  the column's own units;
* categorical columns: the **population stability index** (PSI; drift at >= 0.2 by
  default, the credit-scoring convention: < 0.1 no change, 0.1-0.2 moderate,
  >= 0.2 significant; Siddiqi, "Credit Risk Scorecards", 2006).

Sampling noise sets a floor under the numeric threshold: ``n`` rows drawn from the
reference distribution itself are about ``1.3 / sqrt(n)`` standard deviations away from it
in normed Wasserstein distance (measured with scipy on normal samples: 0.10 at n = 168, a
week of hourly rows; 0.18 at n = 48), and autocorrelated series sit higher. Evidently's
default 0.1 is therefore at the noise floor of a weekly hourly window, so the default here
is 0.2; keep ``monitoring.num_drift_threshold`` well above ``1.3 / sqrt(n)`` for your window.

Source of the API: https://docs.evidentlyai.com/metrics/preset_data_drift and
``evidently.presets.DataDriftPreset`` (0.7), methods ``wasserstein`` and ``psi``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core import artifacts, schema
from pipeline.core.errors import DataQualityError, MonitoringError

log = logging.getLogger(__name__)

HTML, JSON = artifacts.DRIFT_REPORT_HTML.name, artifacts.DRIFT_REPORT_JSON.name


def _import_evidently():
    """Import Evidently 0.7 (under pandas 3 too).

    Evidently 0.7.23 imports ``pandas.core.dtypes.common.infer_dtype_from_object`` at
    module load for a legacy column-type test this module never runs; pandas 3 removed
    it. Providing an identity stand-in lets the package import; the drift metrics do not
    call it.
    """
    import pandas.core.dtypes.common as common

    if not hasattr(common, "infer_dtype_from_object"):
        common.infer_dtype_from_object = lambda dtype: dtype
    try:
        import evidently
        from evidently.presets import DataDriftPreset
    except ImportError as exc:
        raise MonitoringError(
            f"drift detection needs Evidently 0.7 ({exc}); install the monitoring extra: "
            "pip install 'lstm-forecast-pipeline[monitoring]'"
        ) from exc
    return evidently, DataDriftPreset


@dataclass
class DriftResult:
    """Per-column drift scores and the dataset verdict.

    ``scores``: ``{column: score}`` (normed Wasserstein distance or PSI, unitless);
    ``drift_share``: drifted columns / scored columns; ``drifted``: ``drift_share >= threshold share``;
    ``unscored``: ``{column: why}`` for the columns without a value in one of the samples (a sensor
    outage over the whole window): not scored, not in the share.
    """

    scores: dict[str, float]
    thresholds: dict[str, float]
    methods: dict[str, str]
    drifted_columns: list[str]
    drift_share: float
    drifted: bool
    n_reference: int
    n_current: int
    unscored: dict[str, str] = field(default_factory=dict)
    snapshot: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "snapshot"}

    def save(self, folder: Path) -> dict[str, str]:
        """Write the Evidently report as HTML and JSON into ``folder``; returns both paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.snapshot.save_html(str(folder / HTML))
        self.snapshot.save_json(str(folder / JSON))
        return {"html": str(folder / HTML), "json": str(folder / JSON)}


def drift_columns(numeric: list[str], categorical: list[str]) -> tuple[list[str], list[str]]:
    """The monitored columns of a long frame: the target ``y`` and the numeric covariates; the categoricals."""
    return [schema.Y, *numeric], list(categorical)


def detect(
    reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str], mc,
) -> DriftResult:  # fmt: skip
    """Drift of ``current`` against ``reference`` (both long frames in original units).

    Args:
        reference, current: at least the columns ``numeric + categorical``; rows with a
            missing value are ignored column by column (Evidently drops NaNs).
        numeric, categorical: column names (e.g. from :func:`drift_columns`).
        mc: the ``monitoring`` config (methods, thresholds, ``drift_share``, ``reference_max_rows``).

    A column with no value in one of the samples (Evidently refuses an empty column) is left
    out of the report and the share and named in ``unscored``.

    Raises:
        DataQualityError: ``current`` or ``reference`` has no rows, or no column has values in both.
    """
    evidently, DataDriftPreset = _import_evidently()
    DataDefinition, Dataset, Report = evidently.DataDefinition, evidently.Dataset, evidently.Report
    if current.empty or reference.empty:
        raise DataQualityError(f"drift needs rows in both samples; found {len(reference)} reference and {len(current)} current rows")
    reference = reference[[*numeric, *categorical]].tail(mc.reference_max_rows)  # the most recent training rows
    current = current[[*numeric, *categorical]]
    unscored = {c: f"no value in the {which} sample ({len(frame)} rows)" for c in (*numeric, *categorical)
                for which, frame in (("current", current), ("reference", reference)) if frame[c].notna().sum() == 0}  # fmt: skip
    numeric, categorical = [c for c in numeric if c not in unscored], [c for c in categorical if c not in unscored]
    cols = [*numeric, *categorical]
    if not cols:
        raise DataQualityError(f"drift: no column has values in both samples: {unscored}")
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    preset = DataDriftPreset(
        columns=cols, num_method=mc.num_drift_method, num_threshold=mc.num_drift_threshold,
        cat_method=mc.cat_drift_method, cat_threshold=mc.cat_drift_threshold, drift_share=mc.drift_share,
    )  # fmt: skip
    with _constant_column_correlations():
        snapshot = Report([preset]).run(Dataset.from_pandas(current, data_definition=definition), Dataset.from_pandas(reference, data_definition=definition))
    scores = _column_scores(snapshot.dict(), cols)
    thresholds = {c: (mc.num_drift_threshold if c in numeric else mc.cat_drift_threshold) for c in cols}
    methods = {c: (mc.num_drift_method if c in numeric else mc.cat_drift_method) for c in cols}
    drifted = [c for c in cols if scores[c] >= thresholds[c]]
    share = len(drifted) / len(cols)
    return DriftResult(scores, thresholds, methods, drifted, share, share >= mc.drift_share, len(reference), len(current), unscored, snapshot)


def _constant_column_correlations():
    """A numpy error state for Evidently's report: a numeric column constant in a sample has no correlation.

    ``DataDriftPreset`` also draws the numeric columns' correlation matrix (a report widget;
    no drift score uses it) with ``np.corrcoef`` whenever a sample has no NaN. A column that
    is constant within a sample (Beijing's hours of snow ``Is`` are 0 all summer, hours of
    rain ``Ir`` in a dry week) has standard deviation 0, so its correlations are ``0 / 0``:
    NaN, which is the right answer, and numpy's "invalid value encountered in divide"
    RuntimeWarning, printed once per sample and check (about 88 times in ``make loop-demo``).
    Only that floating-point condition (``invalid``) is silenced, and only for the report:
    a division by zero (``divide``) or an overflow still warns, and such a column still
    gets its drift score (normed Wasserstein distance, which floors the reference's standard
    deviation at 0.001).
    """
    import numpy as np

    return np.errstate(invalid="ignore")


def _column_scores(payload: dict, cols: list[str]) -> dict[str, float]:
    """``{column: score}`` from a snapshot's ``ValueDrift`` metrics."""
    scores = {}
    for metric in payload.get("metrics", []):
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift") and config.get("column") in cols:
            scores[config["column"]] = float(metric["value"])
    missing = [c for c in cols if c not in scores]
    if missing:
        raise DataQualityError(f"the Evidently report has no drift score for column(s) {missing} (all values missing in a sample?)")
    return scores
