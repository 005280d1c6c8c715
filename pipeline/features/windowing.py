"""Feature building: long frame -> scaled design matrix -> sliding windows.

Policy (see README, "Feature building"):

* chronological split per series into train / validation / test by row position;
  a window belongs to the part that holds *all* its targets, so test windows may look
  back into validation data but never predict outside the test part;
* runs of missing values of at most ``data.max_gap`` steps are interpolated (numeric)
  or forward-filled (categorical) *for use as inputs*; longer runs stay missing, so
  no window crosses them; no window's target may be interpolated or missing;
* the scikit-learn scaler is fitted on the training rows only (NaNs are ignored by
  scikit-learn's scalers, so its statistics are those of the observed training values);
* seasonal lags (``features.seasonal_lags``): the scaled target one season ``s`` back, and
  ``seasonal_lag_window`` steps around it, for each of the ``h`` target steps, as extra columns
  of the same matrix (column ``y_lag<l>`` at row ``r`` holds ``y(r + h - l)``, so the last ``h``
  rows of a window with origin ``o`` hold ``y(o + k - l)`` for target step ``k``); every lag
  ``l >= h``, so no input reads a target; windows whose lags reach before a series' start or
  into a long gap are dropped (``dropped_for_seasonal_lags`` in the report);
* windows are strided views (``numpy.lib.stride_tricks.sliding_window_view``) into
  one ``(n_rows, n_features)`` float32 matrix plus an int64 vector of window starts:
  no Python loop over windows and no copy until a batch is gathered.

The fitted :class:`Preprocessor` is a plain JSON document, so the served model
applies exactly the transform used in training.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.core import artifacts, schema
from pipeline.core.config import PipelineConfig
from pipeline.core.errors import DataQualityError
from pipeline.data.io import runs_of_true

log = logging.getLogger(__name__)

_SCALERS = {"minmax": "MinMaxScaler", "standard": "StandardScaler", "robust": "RobustScaler"}
#: fitted attributes that fully define each scikit-learn scaler's ``transform``
_SCALER_STATE = {
    "minmax": ("min_", "scale_", "data_min_", "data_max_", "data_range_"),
    "standard": ("mean_", "scale_", "var_"),
    "robust": ("center_", "scale_"),
}
_CALENDAR_PERIOD = {"hour": 24.0, "dayofweek": 7.0, "dayofyear": 365.25}
#: the pandas accessor of each config name (``Series.dt.dayofweek`` is deprecated in pandas 3: Pandas4Warning)
_CALENDAR_ATTR = {"dayofweek": "day_of_week", "dayofyear": "day_of_year"}
SPLITS = ("train", "val", "test")


# ------------------------------------------------------------------ preprocessor


def lag_steps(seasons: list[int], window: int) -> list[int]:
    """Lags (steps before a target step) of the seasonal-lag columns: ``s - j`` for each season ``s``,
    ``j = -window .. window`` (largest first within a season), duplicates dropped. ``[168], 1 -> [169, 168, 167]``."""
    return list(dict.fromkeys(s - j for s in seasons for j in range(-window, window + 1)))


@dataclass(frozen=True)
class Preprocessor:
    """The fitted preprocessing, serialisable to JSON (no pickle).

    ``feature_names`` gives the order of the last axis of ``X``: the target first, then its
    seasonal lags ``y_lag<l>`` (:attr:`lag_steps`), numeric covariates, one-hot columns
    ``<col>=<level>``, calendar sin/cos.
    """

    lookback: int
    horizon: int
    freq: str
    timestamp_column: str
    target_column: str
    series_id_column: str | None
    covariates: list[str]
    categorical_levels: dict[str, list[str]]
    calendar_features: list[str]
    target_transform: str
    max_gap: int
    scaler_kind: str
    scaler_state: dict[str, list[float]]
    feature_names: list[str]
    split_boundaries: dict[str, dict[str, str]] = field(default_factory=dict)
    #: how the served model parses timestamps (:func:`pipeline.data.io.parse_timestamps`)
    timestamp_format: str | None = None
    #: ``data.timezone``: naive input is local time there; calendar features use local time
    timezone: str | None = None
    #: seasons (steps) whose lags are inputs, and the half-width of the window around each
    #: (``features.seasonal_lags``, resolved by :func:`resolve_seasonal_lags`); empty: none
    seasonal_lags: list[int] = field(default_factory=list)
    seasonal_lag_window: int = 0

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def lag_steps(self) -> list[int]:
        """Lags ``l = s - j`` (``j = -w .. w``) of the seasonal-lag columns, in feature order (columns ``1 .. m``)."""
        return lag_steps(self.seasonal_lags, self.seasonal_lag_window)

    @property
    def history_steps(self) -> int:
        """Rows of history one forecast reads: ``lookback``, plus ``max(lag) - horizon`` with seasonal lags."""
        return self.lookback + (max(self.lag_steps) - self.horizon if self.seasonal_lags else 0)

    @property
    def categorical_covariates(self) -> list[str]:
        """The categorical input columns (what :func:`pipeline.data.io.raw_to_long` reads)."""
        return list(self.categorical_levels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Preprocessor:
        return cls(**payload)

    def scaler(self):
        """A scikit-learn scaler carrying the fitted state (``transform`` ready)."""
        import sklearn.preprocessing as skp

        scaler = getattr(skp, _SCALERS[self.scaler_kind])()
        for name, values in self.scaler_state.items():
            setattr(scaler, name, np.asarray(values, dtype=np.float64))
        scaler.n_features_in_ = len(self.scaler_state["scale_"])
        if self.scaler_kind == "standard":
            scaler.n_samples_seen_ = 1
        return scaler

    def inverse_target(self, scaled: np.ndarray) -> np.ndarray:
        """Scaled (transformed) target -> original units. Any shape; returns float64."""
        state = self.scaler_state
        z = np.asarray(scaled, dtype=np.float64)
        if self.scaler_kind == "minmax":
            v = (z - state["min_"][0]) / state["scale_"][0]
        elif self.scaler_kind == "standard":
            v = z * state["scale_"][0] + state["mean_"][0]
        else:
            v = z * state["scale_"][0] + state["center_"][0]
        return np.expm1(v) if self.target_transform == "log1p" else v


def _fit_scaler(kind: str, numeric_train: np.ndarray) -> dict[str, list[float]]:
    import sklearn.preprocessing as skp

    scaler = getattr(skp, _SCALERS[kind])().fit(numeric_train)
    return {name: np.asarray(getattr(scaler, name), dtype=np.float64).tolist() for name in _SCALER_STATE[kind]}


# ------------------------------------------------------------------ encoding


def _short_gap_mask(missing: np.ndarray, max_gap: int) -> np.ndarray:
    """True on missing values that lie in an interior run of at most ``max_gap`` steps."""
    fill = np.zeros_like(missing, dtype=bool)
    starts, lengths = runs_of_true(missing)
    for s, n in zip(starts, lengths, strict=True):
        if n <= max_gap and s > 0 and s + n < len(missing):
            fill[s : s + n] = True
    return fill


def fill_short_gaps(part: pd.DataFrame, columns: list[str], categorical: list[str], max_gap: int) -> pd.DataFrame:
    """Interpolate (numeric) or forward-fill (categorical) runs of <= ``max_gap`` NaNs.

    ``part`` is one series on its full grid; longer runs and the series' ends stay NaN.
    Returns a new frame (the input is not modified).
    """
    out = part.copy()
    for col in columns + categorical:
        missing = out[col].isna().to_numpy()
        if not missing.any() or max_gap == 0:
            continue
        fill = _short_gap_mask(missing, max_gap)
        filled = out[col].ffill() if col in categorical else out[col].interpolate(method="linear", limit_area="inside")
        out.loc[fill, col] = filled[fill]
    return out


def _numeric_block(part: pd.DataFrame, prep_transform: str, covariates: list[str], where: str) -> np.ndarray:
    y = part[schema.Y].to_numpy(dtype=np.float64)
    if prep_transform == "log1p":
        negative = np.flatnonzero(y < 0)
        if len(negative):
            stamps = part[schema.DS].iloc[negative[:5]].astype(str).tolist()
            raise DataQualityError(
                f"{where}: target_transform 'log1p' expects y >= 0, found {len(negative)} negative values, e.g. at {stamps}"
            )
        y = np.log1p(y)
    return np.column_stack([y, *(part[c].to_numpy(dtype=np.float64) for c in covariates)])


def _one_hot(part: pd.DataFrame, levels: dict[str, list[str]], where: str) -> list[np.ndarray]:
    blocks = []
    for col, known in levels.items():
        values = part[col]
        unseen = values.notna() & ~values.isin(known)
        if unseen.any():
            bad = part.loc[unseen, [schema.DS, col]].head(5)
            examples = ", ".join(f"{v!r} at {t}" for t, v in zip(bad[schema.DS], bad[col], strict=True))
            raise DataQualityError(
                f"{where}: column {col!r} has level(s) {sorted(values[unseen].unique().tolist())} not seen in "
                f"training (known levels: {known}); {int(unseen.sum())} row(s), e.g. {examples}"
            )
        onehot = np.column_stack([(values == level).to_numpy(dtype=np.float64) for level in known])
        onehot[values.isna().to_numpy()] = np.nan
        blocks.append(onehot)
    return blocks


def calendar_for_freq(freq: str) -> tuple[str, ...]:
    """Calendar encodings that vary within the seasons of ``freq``: the default of ``features.calendar_features``.

    Sub-daily: ``hour`` and ``dayofweek`` (the daily and weekly seasons); daily: ``dayofweek``
    and ``dayofyear``; weekly to monthly: ``dayofyear``; otherwise none. ``dayofyear`` is left
    out for sub-daily data, whose series often span less than a year (test days of the
    year then never occur in training).
    """
    offset = pd.tseries.frequencies.to_offset(freq)
    code = offset.rule_code.split("-")[0]
    if code.startswith("W") or code in ("M", "MS", "ME", "SM", "SMS", "SME"):
        return ("dayofyear",)
    try:
        step = pd.Timedelta(offset)
    except ValueError:
        return ()
    if step < pd.Timedelta("1D"):
        return ("hour", "dayofweek")
    if step == pd.Timedelta("1D"):
        return ("dayofweek", "dayofyear")
    return ()


def resolve_calendar(cfg: PipelineConfig) -> tuple[str, ...]:
    """``features.calendar_features``, or :func:`calendar_for_freq` of ``data.freq`` when unset (logged)."""
    if cfg.features.calendar_features is not None:
        return tuple(cfg.features.calendar_features)
    derived = calendar_for_freq(cfg.data.freq)
    log.info("features.calendar_features not set: %s derived from data.freq=%r", list(derived), cfg.data.freq)
    return derived


def _calendar_value(ds: pd.Series, name: str) -> np.ndarray:
    """``ds.dt.<name>`` as float64; ``hour`` includes the minutes (30-minute data: 0, 0.5, ..., 23.5)."""
    if name == "hour":
        return ds.dt.hour.to_numpy(dtype=np.float64) + ds.dt.minute.to_numpy(dtype=np.float64) / 60.0
    return getattr(ds.dt, _CALENDAR_ATTR.get(name, name)).to_numpy(dtype=np.float64)


def _calendar(ds: pd.Series, names: list[str], zone: str | None = None) -> list[np.ndarray]:
    """sin/cos of each calendar value; ``ds`` is naive UTC when ``zone`` is set, read in local time there."""
    if zone and names:
        ds = ds.dt.tz_localize("UTC").dt.tz_convert(zone)
    blocks = []
    for name in names:
        angle = 2 * np.pi * _calendar_value(ds, name) / _CALENDAR_PERIOD[name]
        blocks.append(np.column_stack([np.sin(angle), np.cos(angle)]))
    return blocks


def seasonal_lag_columns(target: np.ndarray, lags: list[int], horizon: int) -> np.ndarray:
    """``(n,)`` scaled target -> ``(n, len(lags))`` float64: column ``i`` at row ``r`` is ``target[r + horizon - lags[i]]``.

    NaN where that row lies before the series' start. In a window with origin ``o``, row ``o - h + k``
    (``k = 1 .. h``, the last ``h`` rows) then holds ``y(o + k - l)``: the value ``l`` steps before
    target step ``k``. Each ``l >= horizon`` (:class:`pipeline.core.config.FeaturesConfig`), so a row
    never holds a later value than its own: no window's input reads one of its targets.
    """
    out = np.full((len(target), len(lags)), np.nan)
    for i, lag in enumerate(lags):
        shift = lag - horizon  # >= 0: rows back from the row the value sits on
        if shift < len(target):
            out[shift:, i] = target[: len(target) - shift]
    return out


def design_matrix(part: pd.DataFrame, prep: Preprocessor, where: str = "data") -> np.ndarray:
    """One series (full grid, short gaps filled) -> ``(n_rows, n_features)`` float32.

    Columns follow ``prep.feature_names``; a row with any NaN is not usable as input. The
    seasonal-lag columns are shifted copies of the scaled target column (one scaler for both).

    Raises:
        DataQualityError: an unseen categorical level, or a negative target under ``log1p``.
    """
    numeric = prep.scaler().transform(_numeric_block(part, prep.target_transform, prep.covariates, where))
    lags = seasonal_lag_columns(numeric[:, 0], prep.lag_steps, prep.horizon)
    blocks = [numeric[:, :1], lags, numeric[:, 1:], *_one_hot(part, prep.categorical_levels, where), *_calendar(part[schema.DS], prep.calendar_features, prep.timezone)]
    return np.column_stack(blocks).astype(np.float32)


def _feature_names(cfg: PipelineConfig, levels: dict[str, list[str]], calendar: tuple[str, ...], lags: list[int]) -> list[str]:
    names = [schema.Y, *(f"{schema.Y}_lag{lag}" for lag in lags), *cfg.data.covariates]
    names += [f"{col}={lvl}" for col, lv in levels.items() for lvl in lv]
    names += [f"{cal}_{fn}" for cal in calendar for fn in ("sin", "cos")]
    return names


# ------------------------------------------------------------------ windows


@dataclass
class Windows:
    """Windows over one stacked matrix, as starts into it (no copies until asked).

    Attributes:
        values: ``(n_rows, n_features)`` float32, scaled inputs (NaN where unusable).
        target: ``(n_rows,)`` float32, scaled target (NaN where not observed).
        starts: ``(n_windows,)`` int64; window ``i`` reads rows ``starts[i] ..
            starts[i] + lookback - 1`` and predicts ``starts[i] + lookback .. + horizon - 1``.
    """

    values: np.ndarray
    target: np.ndarray
    starts: np.ndarray
    lookback: int
    horizon: int

    def __len__(self) -> int:
        return len(self.starts)

    def x_view(self) -> np.ndarray:
        """Every window as a read-only strided view, ``(n_rows - lookback + 1, lookback, n_features)``."""
        return sliding_window_view(self.values, self.lookback, axis=0).transpose(0, 2, 1)

    def batch(self, idx: np.ndarray | slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Gather windows ``idx`` -> ``X (b, lookback, n_features)``, ``y (b, horizon)``, float32 copies."""
        s = self.starts[idx]
        x = np.ascontiguousarray(self.x_view()[s])
        y = np.ascontiguousarray(sliding_window_view(self.target, self.horizon)[s + self.lookback])
        return x, y

    @property
    def X(self) -> np.ndarray:
        """All windows, ``(n_windows, lookback, n_features)`` float32 (materialises a copy)."""
        return self.batch()[0]

    @property
    def y(self) -> np.ndarray:
        """All targets, ``(n_windows, horizon)`` float32, scaled."""
        return self.batch()[1]

    @property
    def origins(self) -> np.ndarray:
        """Row of the last input of each window (the forecast origin), ``(n_windows,)`` int64."""
        return self.starts + self.lookback - 1


def _window_counts(ok: np.ndarray, width: int) -> np.ndarray:
    """For each start ``s``, the number of ``True`` in ``ok[s:s+width]`` (length ``n - width + 1``)."""
    c = np.zeros(len(ok) + 1, dtype=np.int32 if len(ok) < 2**31 - 1 else np.int64)
    np.cumsum(ok, out=c[1:])
    return c[width:] - c[:-width]


# ------------------------------------------------------------------ feature set


@dataclass
class FeatureSet:
    """Everything later stages need, for all series stacked row-wise.

    Attributes:
        values: ``(N, F)`` float32 scaled inputs; target: ``(N,)`` float32 scaled target;
        y: ``(N,)`` float64 target in original units (NaN where missing);
        ds: ``(N,)`` datetime64; series: ``(N,)`` int32 index into ``series_ids``;
        starts: window starts per split (``train``, ``val``, ``test``), int64.
    """

    prep: Preprocessor
    values: np.ndarray
    target: np.ndarray
    y: np.ndarray
    ds: np.ndarray
    series: np.ndarray
    series_ids: list[str]
    starts: dict[str, np.ndarray]
    report: dict[str, Any]

    def windows(self, split: str) -> Windows:
        return Windows(self.values, self.target, self.starts[split], self.prep.lookback, self.prep.horizon)

    def origin_times(self, split: str) -> np.ndarray:
        """Each window's origin (its last input time) of ``split``, ``(n_windows,)`` datetime64."""
        return self.ds[self.starts[split] + self.prep.lookback - 1]

    def target_times(self, split: str) -> np.ndarray:
        """When each target of ``split`` is observed: ``(n_windows, horizon)`` datetime64 (the rows' ``ds``)."""
        s = self.starts[split] + self.prep.lookback
        return sliding_window_view(self.ds, self.prep.horizon)[s]

    def targets(self, split: str) -> np.ndarray:
        """Targets of ``split`` in original units, ``(n_windows, horizon)`` float64."""
        s = self.starts[split] + self.prep.lookback
        return sliding_window_view(self.y, self.prep.horizon)[s].astype(np.float64)

    def lookback_targets(self, starts: np.ndarray) -> np.ndarray:
        """The target over the input rows of the windows starting at ``starts`` (rows of the
        stacked matrix), ``(n, lookback)`` float64, original units, NaN where not observed: what a
        normalised prediction interval scales with (:func:`pipeline.models.conformal.local_scale`)."""
        starts = np.asarray(starts, dtype=np.int64)
        if len(starts) == 0:
            return np.empty((0, self.prep.lookback), dtype=np.float64)
        return sliding_window_view(self.y, self.prep.lookback)[starts].astype(np.float64)


def _split_rows(n: int, cfg: PipelineConfig) -> tuple[int, int, int]:
    """Rows where validation, test and the recent training part start, for a series of ``n`` rows.

    The fractions apply to the rows before the last ``features.recent_train_steps`` rows
    (those go back into the training part; ``n`` when there are none). With
    ``features.validation_tail_steps`` (the refit protocol) validation and test both start
    ``validation_tail_steps`` rows before the end: one tail, scored twice.

    Raises:
        DataQualityError: ``recent_train_steps`` or ``validation_tail_steps`` leaves too few rows for the other parts.
    """
    tail = cfg.features.validation_tail_steps
    if tail:
        need = 2 * (cfg.features.lookback + cfg.features.horizon)
        if n - tail < need or tail < cfg.features.horizon:
            raise DataQualityError(
                f"features.validation_tail_steps ({tail}) leaves {n - tail} of {n} steps for training; expected at least "
                f"2 x (lookback + horizon) = {need} before the tail, and a tail of at least horizon = {cfg.features.horizon} steps"
            )
        return n - tail, n - tail, n
    recent = cfg.features.recent_train_steps
    m = n - recent
    if recent and m < 2 * (cfg.features.lookback + cfg.features.horizon):
        raise DataQualityError(
            f"features.recent_train_steps ({recent}) leaves {m} of {n} steps for the chronological split; expected at "
            f"least 2 x (lookback + horizon) = {2 * (cfg.features.lookback + cfg.features.horizon)}"
        )
    n_test = max(1, int(round(m * cfg.features.test_fraction)))
    n_val = int(round(m * validation_fraction(cfg, m)))
    return m - n_val - n_test, m - n_test, m


#: the validation share when ``features.validation_fraction`` is unset and a year does not fit
DEFAULT_VALIDATION_FRACTION = 0.1
#: the most rows the derived validation share takes to cover a year
MAX_DERIVED_VALIDATION_FRACTION = 0.25


def validation_fraction(cfg: PipelineConfig, n: int) -> float:
    """``features.validation_fraction``, or when unset the share derived for a series of ``n`` rows.

    Derived: the largest of 0.1 (:data:`DEFAULT_VALIDATION_FRACTION`) and the shares of ``n`` that
    one year of ``data.freq`` (:func:`pipeline.core.seasons.steps_per_year`) and two cycles of its
    longest season (:func:`pipeline.core.seasons.seasons_for_freq`: two weeks of sub-daily data)
    take, each counted only when it is at most :data:`MAX_DERIVED_VALIDATION_FRACTION` (0.25) and
    ``0.8 - test_fraction`` (training keeps a fifth of the rows). Why: the validation part
    calibrates the conformal intervals, which hold only when calibration and test errors are
    exchangeable (:mod:`pipeline.models.conformal`):

    * where the error's size follows the time of year, a part shorter than a year calibrates on
      one season. Seattle's daily maximum temperature (four years) had a validation part from
      October to March and covered 71.6% of a spring-to-autumn test part at 80; with a year (0.25)
      78.7% (94.8% at 95), and its RMSE fell 1.3%; Beijing's five hourly years (0.2) lost 0.7% of
      RMSE and cover 81.2% / 95.9%;
    * where it follows the weekday, a part shorter than two weeks holds some weekdays once: the
      half-hourly demand set (12 weeks) calibrated on 8.4 days over-covered, 88% at 80; on two
      weeks (0.167) 80.1% / 94.7% at the same RMSE (docs/BENCHMARKS.md "A validation part of a
      year").

    A series shorter than four years keeps 0.1 for the year (covering it would take more than a
    quarter of the rows); one longer than ten already has it in 0.1 (weekly CO2, 44 years).
    """
    from pipeline.core.seasons import seasons_for_freq, steps_per_year  # fit time only: not shipped with a served model

    if cfg.features.validation_fraction is not None:
        return float(cfg.features.validation_fraction)
    if n <= 0:
        return DEFAULT_VALIDATION_FRACTION
    upper = min(MAX_DERIVED_VALIDATION_FRACTION, 0.8 - cfg.features.test_fraction)
    spans = [steps_per_year(cfg.data.freq) or 0, 2 * max(seasons_for_freq(cfg.data.freq))]
    fits = [span / n for span in spans if span > 1 and span / n <= upper]
    return max([DEFAULT_VALIDATION_FRACTION, *fits])


def _check_length(long: pd.DataFrame, cfg: PipelineConfig) -> None:
    f = cfg.features
    lengths = long.groupby(schema.UNIQUE_ID).size()
    reach = max(f.seasonal_lags) + f.seasonal_lag_window - f.horizon if f.seasonal_lags else 0  # explicit lags only
    need = f.lookback + f.horizon + reach
    short = lengths[lengths < need]
    if len(short):
        lags = f" + the seasonal lags' reach ({reach}: features.seasonal_lags {list(f.seasonal_lags)})" if reach else ""
        raise DataQualityError(
            f"features.lookback ({f.lookback}) + features.horizon ({f.horizon}){lags} = {need} steps, "
            f"but series {short.index[0]!r} has only {int(short.iloc[0])} steps: no window fits"
        )


#: a derived season is used only when the history its lags need before a window costs at most
#: this share of the shortest series' training part (``features.seasonal_lags`` unset)
MAX_DERIVED_LAG_SHARE = 0.25
#: ... and when its lags fall into a gap (a missing target one season back) for at most this share of
#: the training windows that would exist without it: gappy data (Beijing: 9.7% of test origins lost to
#: the weekly lag) keeps its forecasts, gap-free data gets the lags (docs/BENCHMARKS.md "Seasonal lags")
MAX_DERIVED_LAG_GAP_LOSS = 0.01


def lag_gap_loss(train: pd.DataFrame, season: int, window: int, lookback: int, horizon: int) -> float:
    """Share of the training windows (all ``horizon`` targets observed) whose lags one ``season`` back
    (``+- window`` steps) hit a missing target: the windows the lag would drop for gaps.

    Args:
        train: long ``unique_id, ds, y`` training rows on the full ``data.freq`` grid (NaN ``y`` in gaps).
        season, window, lookback, horizon: steps.

    Returns:
        A share in ``[0, 1]``; windows whose lags reach before a series' start are not counted
        (that cost is :data:`MAX_DERIVED_LAG_SHARE`'s). 0 when there is no window.
    """
    lost = total = 0
    for _, part in train.groupby(schema.UNIQUE_ID, sort=False):
        missing = np.concatenate([[0], np.cumsum(~np.isfinite(part[schema.Y].to_numpy(dtype=np.float64)))])
        n = len(part)
        a = np.arange(lookback, n - horizon + 1)  # first target row of each window
        a = a[a - season - window >= 0]
        if not len(a):
            continue
        observed = (missing[a + horizon] - missing[a]) == 0  # targets observed: the windows kept without lags
        lag_missing = (missing[a + horizon - season + window] - missing[a - season - window]) > 0
        total += int(observed.sum())
        lost += int((observed & lag_missing).sum())
    return lost / total if total else 0.0


def resolve_seasonal_lags(cfg: PipelineConfig, min_train_rows: int, train: pd.DataFrame | None = None) -> tuple[int, ...]:
    """The seasons whose lags are inputs: ``features.seasonal_lags`` when set, else derived (logged).

    Derived: :func:`pipeline.core.seasons.seasonal_lag_seasons` (the seasons of ``data.freq`` that reach
    past the window), keeping a season ``s`` only when its extra history ``s + w - horizon`` is at most
    :data:`MAX_DERIVED_LAG_SHARE` of ``min_train_rows`` (the shortest series' training part), so a
    default never empties a short series of training windows, and (with ``train``, the training
    rows) when its lags drop at most :data:`MAX_DERIVED_LAG_GAP_LOSS` of the training windows for
    gaps (:func:`lag_gap_loss`), so a default never costs gappy data its forecasts.
    """
    from pipeline.core.seasons import seasonal_lag_seasons  # fit time only: not shipped with a served model

    f = cfg.features
    seasons = seasonal_lag_seasons(cfg)
    if f.seasonal_lags is not None:
        return seasons
    kept = tuple(s for s in seasons if s + f.seasonal_lag_window - f.horizon <= MAX_DERIVED_LAG_SHARE * min_train_rows)
    losses = {s: lag_gap_loss(train, s, f.seasonal_lag_window, f.lookback, f.horizon) for s in kept} if train is not None else {}
    kept = tuple(s for s in kept if losses.get(s, 0.0) <= MAX_DERIVED_LAG_GAP_LOSS)
    log.info("features.seasonal_lags not set: %s derived from data.freq=%r, lookback %d, horizon %d (seasons of the freq: %s; "
             "training part of the shortest series: %d steps; share of training windows each would drop for gaps: %s)", list(kept),
             cfg.data.freq, f.lookback, f.horizon, list(seasons), min_train_rows, {s: round(v, 4) for s, v in losses.items()})  # fmt: skip
    return kept


def fit_preprocessor(long: pd.DataFrame, cfg: PipelineConfig) -> Preprocessor:
    """Fit the scaler and categorical levels on the training rows of every series."""
    d, f = cfg.data, cfg.features
    train_parts, bounds, train_rows = [], {}, []
    for uid, part in long.groupby(schema.UNIQUE_ID, sort=True):
        val_row, test_row, recent_row = _split_rows(len(part), cfg)
        train_parts += [part.iloc[:val_row], part.iloc[recent_row:]]
        train_rows.append(val_row)
        bounds[str(uid)] = {"val_start": str(part[schema.DS].iat[val_row]), "test_start": str(part[schema.DS].iat[test_row])}
        if not cfg.features.validation_tail_steps:  # the share that made val_start (the refit protocol's tail has none)
            bounds[str(uid)]["validation_fraction"] = f"{validation_fraction(cfg, len(part) - cfg.features.recent_train_steps):.6g}"
        if recent_row < len(part):  # the recent training part (absent: plain chronological split)
            bounds[str(uid)]["recent_start"] = str(part[schema.DS].iat[recent_row])
        if cfg.features.validation_tail_steps:  # refit protocol: the test part is the validation tail
            bounds[str(uid)]["test_is_validation"] = "true"
    if cfg.features.validation_fraction is None and not cfg.features.validation_tail_steps:
        shares = sorted({b["validation_fraction"] for b in bounds.values()})
        log.info("features.validation_fraction not set: %s of each series (at least %g, and a year or two cycles of the longest "
                 "season of data.freq=%r where that takes at most %g of the rows)", ", ".join(shares), DEFAULT_VALIDATION_FRACTION,
                 d.freq, MAX_DERIVED_VALIDATION_FRACTION)  # fmt: skip
    train = pd.concat(train_parts)
    seasons = list(resolve_seasonal_lags(cfg, min(train_rows), pd.concat(train_parts[::2])))
    levels = {
        col: list(d.categorical_levels.get(col) or sorted(train[col].dropna().unique().tolist()))
        for col in d.categorical_covariates
    }
    numeric = _numeric_block(train, f.target_transform, list(d.covariates), "training part")
    calendar = resolve_calendar(cfg)
    w = f.seasonal_lag_window if seasons else 0
    return Preprocessor(
        lookback=f.lookback, horizon=f.horizon, freq=d.freq, timestamp_column=d.timestamp_column,
        target_column=d.target_column, series_id_column=d.series_id_column, covariates=list(d.covariates),
        categorical_levels=levels, calendar_features=list(calendar), target_transform=f.target_transform,
        max_gap=d.max_gap, scaler_kind=f.scaler, scaler_state=_fit_scaler(f.scaler, numeric),
        feature_names=_feature_names(cfg, levels, calendar, lag_steps(seasons, w)), split_boundaries=bounds,
        timestamp_format=d.timestamp_format, timezone=d.timezone, seasonal_lags=seasons, seasonal_lag_window=w,
    )  # fmt: skip


def _series_matrix(part: pd.DataFrame, prep: Preprocessor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One series -> design matrix ``(n, F)`` float32, ``input_ok (n,)`` and ``target_ok (n,)`` bool."""
    filled = fill_short_gaps(part, [schema.Y, *prep.covariates], list(prep.categorical_levels), prep.max_gap)
    values = design_matrix(filled, prep, where=f"series {part[schema.UNIQUE_ID].iat[0]!r}")
    return values, np.isfinite(values).all(axis=1), part[schema.Y].notna().to_numpy()


def origin_starts(input_ok: np.ndarray, target_ok: np.ndarray, lookback: int) -> np.ndarray:
    """Starts of every window that can be *forecast* (targets may lie beyond the data).

    A window is usable when its ``lookback`` inputs are all usable and its origin (last
    input) is observed: interpolating the origin would read the first target. The training
    windows are these with all ``horizon`` targets observed (:func:`_split_starts`).

    Args:
        input_ok: ``(n,)`` bool, row usable as input. target_ok: ``(n,)`` bool, observed target.

    Returns:
        ``(k,)`` int64 starts in ``[0, n - lookback]``, ascending.
    """
    n_starts = len(input_ok) - lookback + 1
    if n_starts <= 0:
        return np.empty(0, dtype=np.int64)
    good_in = _window_counts(input_ok, lookback)[:n_starts] == lookback
    return np.flatnonzero(good_in & target_ok[lookback - 1 :]).astype(np.int64)


def transform(long: pd.DataFrame, prep: Preprocessor) -> FeatureSet:
    """Apply a fitted :class:`Preprocessor` to a long frame; never refits anything.

    Args:
        long: ``unique_id, ds, y, <covariates>`` on the full ``freq`` grid per series
            (gaps as NaN rows), e.g. from :func:`pipeline.data.io.raw_to_long`.
        prep: the preprocessing fitted on the training part (:func:`fit_preprocessor`).

    Returns:
        A :class:`FeatureSet` whose ``starts`` has one key, ``"forecast"``: every window
        whose inputs are usable and whose origin is observed, targets observed or not
        (``(k,)`` int64, global rows). Window ``i``'s origin is row ``starts[i] + lookback - 1``.

    Raises:
        DataQualityError: an unseen categorical level, or a negative target under ``log1p``.
    """
    parts = [p for _, p in long.groupby(schema.UNIQUE_ID, sort=True)]
    blocks, starts, offset = [], [], 0
    for part in parts:
        values, input_ok, target_ok = _series_matrix(part, prep)
        blocks.append(values)
        starts.append(origin_starts(input_ok, target_ok, prep.lookback) + offset)
        offset += len(part)
    values = np.concatenate(blocks) if blocks else np.empty((0, prep.n_features), np.float32)
    fs = FeatureSet(
        prep=prep, values=values, target=values[:, 0].copy(),
        y=np.concatenate([p[schema.Y].to_numpy(np.float64) for p in parts]) if parts else np.empty(0),
        ds=np.concatenate([p[schema.DS].to_numpy() for p in parts]) if parts else np.empty(0, "datetime64[ns]"),
        series=np.concatenate([np.full(len(p), i, np.int32) for i, p in enumerate(parts)]) if parts else np.empty(0, np.int32),
        series_ids=[str(p[schema.UNIQUE_ID].iat[0]) for p in parts],
        starts={"forecast": np.concatenate(starts).astype(np.int64) if starts else np.empty(0, np.int64)}, report={},
    )  # fmt: skip
    fs.target[~np.isfinite(fs.y)] = np.nan
    return fs


def _recent_starts(prep: Preprocessor, series_ids) -> np.ndarray:
    """Per series, where the recent training part starts (``datetime64`` max when there is none)."""
    never = np.datetime64("9999-12-31T00:00:00")
    return np.array([
        np.datetime64(pd.Timestamp(prep.split_boundaries[u]["recent_start"])) if "recent_start" in prep.split_boundaries[u] else never
        for u in series_ids
    ])  # fmt: skip


def _split_starts(fs: FeatureSet, series_len: dict[int, int], prep: Preprocessor) -> tuple[dict[str, np.ndarray], dict]:
    """Assign the training windows (all targets observed) to train / val / test by the split boundaries."""
    L, H = prep.lookback, prep.horizon
    target_ok = np.isfinite(fs.y)
    # windows of :func:`transform` whose h targets are inside the series and observed
    s = fs.starts["forecast"]
    first, last = s + L, s + L + H  # target rows [first, last)
    ends = np.cumsum([series_len[k] for k in range(len(series_len))])
    inside = last <= ends[fs.series[s]]
    s, first, last = s[inside], first[inside], last[inside]
    counts = _window_counts(target_ok, H)
    s = s[counts[first] == H] if len(s) else s
    first, last = s + L, s + L + H
    ds = fs.ds
    val_start = np.array([np.datetime64(pd.Timestamp(prep.split_boundaries[u]["val_start"])) for u in fs.series_ids])
    test_start = np.array([np.datetime64(pd.Timestamp(prep.split_boundaries[u]["test_start"])) for u in fs.series_ids])
    recent_start = _recent_starts(prep, fs.series_ids)
    k = fs.series[s]
    recent = ds[first] >= recent_start[k]  # targets in the recent training part (its inputs may reach back into test)
    tail = np.array([prep.split_boundaries[u].get("test_is_validation") == "true" for u in fs.series_ids])[k]
    split_of = {
        "train": (ds[last - 1] < val_start[k]) | recent,
        "val": (ds[first] >= val_start[k]) & ((ds[last - 1] < test_start[k]) | tail),
        "test": (ds[first] >= test_start[k]) & (ds[last - 1] < recent_start[k]),
    }
    out = {name: s[m] for name, m in split_of.items()}
    n_all = sum(max(n - L - H + 1, 0) for n in series_len.values())
    kept = sum(len(v) for v in out.values())
    reach = prep.history_steps - L  # windows starting closer than this to a series' start lack their seasonal lags
    before_lags = sum(min(reach, max(n - L - H + 1, 0)) for n in series_len.values())
    return out, {"candidates": n_all, "dropped_for_seasonal_lags": before_lags, "dropped_for_gaps": n_all - len(s) - before_lags,
                 "dropped_at_split_boundaries": len(s) - kept}  # fmt: skip


def build_features(long: pd.DataFrame, cfg: PipelineConfig) -> FeatureSet:
    """Long frame on the full grid (from validation) -> :class:`FeatureSet`.

    :func:`fit_preprocessor` on the training part, then :func:`transform`, then the
    windows whose targets are all observed are split into ``train``/``val``/``test``.

    Raises:
        DataQualityError: ``lookback + horizon`` longer than a series; no training or
            no test windows left after the gap policy; an unseen categorical level.
    """
    _check_length(long, cfg)
    prep = fit_preprocessor(long, cfg)
    fs = transform(long, prep)
    lengths = long.groupby(schema.UNIQUE_ID, sort=True).size().to_numpy()
    fs.starts, counts = _split_starts(fs, dict(enumerate(lengths.tolist())), prep)
    fs.report = _report(fs, [counts])
    for split in ("train", "test"):
        if len(fs.starts[split]) == 0:
            raise DataQualityError(
                f"no {split} windows: lookback {prep.lookback} + horizon {prep.horizon} with validation_fraction "
                f"{sorted({b.get('validation_fraction', 'tail') for b in prep.split_boundaries.values()})} and test_fraction "
                f"{cfg.features.test_fraction} leave none after the gap policy ({fs.report['windows']})"
            )
    return fs


def finetune_steps(cfg: PipelineConfig) -> int:
    """``retrain.finetune_steps``, or ``max(one week of data.freq steps, 4 x (lookback + horizon))`` when unset.

    A week holds every hour of every weekday once (the daily and weekly seasons a sub-daily
    series has); ``4 x (lookback + horizon)`` keeps a few dozen windows where a week of steps
    is fewer (daily and coarser data). Hourly data, lookback 24, h 4: 168 steps, 141 windows.
    """
    from pipeline.core.seasons import steps_per_week

    f = cfg.features
    return cfg.retrain.finetune_steps or max(steps_per_week(cfg.data.freq), 4 * (f.lookback + f.horizon))


def build_finetune_features(long: pd.DataFrame, cfg: PipelineConfig, champion: Preprocessor) -> FeatureSet:
    """Windows for ``retrain.mode: finetune``: the champion's fitted preprocessing, applied unchanged.

    Nothing is refitted: the scaler state, categorical levels, calendar encodings and feature
    order are ``champion``'s (the new version ships them again); only ``split_boundaries``
    change. Per series: the last ``features.validation_tail_steps`` steps are the validation
    tail (early stopping, and the gate's sanity check: the test part is the tail, as refit's);
    the training windows are those whose ``h`` targets all lie in the :func:`finetune_steps`
    steps just before the tail (their inputs may reach further back).

    Raises:
        DataQualityError: no validation tail is set (not a triggered retrain), a series too short
            for the tail, or no training / tail windows left after the gap policy.
    """
    import dataclasses

    tail, steps, L, H = cfg.features.validation_tail_steps, finetune_steps(cfg), champion.lookback, champion.horizon
    if not tail:
        raise DataQualityError("retrain.mode finetune: expected features.validation_tail_steps > 0 (set by the loop's retrain_config), found 0")
    _check_length(long, cfg)
    bounds = {}
    for uid, part in long.groupby(schema.UNIQUE_ID, sort=True):
        n, ds = len(part), part[schema.DS]
        if n - tail < L + H:
            raise DataQualityError(
                f"retrain.mode finetune: series {uid!r} has {n} steps; the validation tail ({tail}) leaves {n - tail}, "
                f"expected at least lookback + horizon = {L + H} before it"
            )
        tail_at = str(ds.iat[n - tail])
        bounds[str(uid)] = {"val_start": tail_at, "test_start": tail_at, "test_is_validation": "true",
                            "finetune_start": str(ds.iat[max(n - tail - steps, 0)])}  # fmt: skip
    prep = dataclasses.replace(champion, split_boundaries=bounds)
    fs = transform(long, prep)
    lengths = long.groupby(schema.UNIQUE_ID, sort=True).size().to_numpy()
    fs.starts, counts = _split_starts(fs, dict(enumerate(lengths.tolist())), prep)
    first_allowed = np.array([np.datetime64(pd.Timestamp(bounds[u]["finetune_start"])) for u in fs.series_ids])
    train = fs.starts["train"]
    keep = fs.ds[train + L] >= first_allowed[fs.series[train]]
    fs.starts["train"], counts["before_finetune_steps"] = train[keep], int((~keep).sum())
    fs.report = {**_report(fs, [counts]), "finetune_steps": steps}
    for split, what in (("train", f"the last retrain.finetune_steps = {steps} steps before the tail"), ("test", f"the validation tail ({tail} steps)")):
        if len(fs.starts[split]) == 0:
            raise DataQualityError(f"retrain.mode finetune: no {split} windows in {what} after the gap policy ({fs.report['windows']})")
    return fs


def _report(fs: FeatureSet, counts: list[dict]) -> dict[str, Any]:
    totals = {k: int(sum(c[k] for c in counts)) for k in counts[0]}
    return {
        "rows": int(len(fs.values)),
        "series": len(fs.series_ids),
        "n_features": fs.prep.n_features,
        "feature_names": fs.prep.feature_names,
        "windows": {**totals, **{s: int(len(v)) for s, v in fs.starts.items()}},
        "split_boundaries": fs.prep.split_boundaries,
    }


# ------------------------------------------------------------------ persistence


def training_part(long: pd.DataFrame, prep: Preprocessor) -> pd.DataFrame:
    """The training rows (before each series' validation start, and its recent training part if any): the drift reference (long format, original units)."""
    uid = long[schema.UNIQUE_ID].astype(str)
    val_start = uid.map({u: pd.Timestamp(b["val_start"]) for u, b in prep.split_boundaries.items()})
    recent = uid.map({u: pd.Timestamp(b.get("recent_start", pd.Timestamp.max)) for u, b in prep.split_boundaries.items()})
    return long[(long[schema.DS] < val_start) | (long[schema.DS] >= recent)].reset_index(drop=True)


def save_features(fs: FeatureSet, target: Path, reference: pd.DataFrame | None = None) -> Path:
    """Write the features step (``artifacts.PREPROCESSING``, ``FEATURE_ARRAYS``, ``FEATURES_REPORT``, and
    ``DRIFT_REFERENCE`` when given: the training part's long rows) into ``target`` atomically."""
    with artifacts.atomic_dir(target) as tmp:
        if reference is not None:
            reference.to_parquet(artifacts.DRIFT_REFERENCE.at(tmp), index=False)
        artifacts.write_json(artifacts.PREPROCESSING.at(tmp), fs.prep.to_dict())
        artifacts.write_json(artifacts.FEATURES_REPORT.at(tmp), fs.report)
        np.savez(
            artifacts.FEATURE_ARRAYS.at(tmp), values=fs.values, target=fs.target, y=fs.y, ds=fs.ds.astype("datetime64[ns]").astype(np.int64),
            series=fs.series, series_ids=np.asarray(fs.series_ids), **{f"starts_{k}": v for k, v in fs.starts.items()},
        )  # fmt: skip
    return target


def load_preprocessor(folder: Path) -> Preprocessor:
    return Preprocessor.from_dict(artifacts.read_json(artifacts.PREPROCESSING.at(folder)))


def load_features(folder: Path) -> FeatureSet:
    """Read what :func:`save_features` wrote."""
    folder = Path(folder)
    with np.load(artifacts.FEATURE_ARRAYS.at(folder), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return FeatureSet(
        prep=load_preprocessor(folder), values=arrays["values"], target=arrays["target"], y=arrays["y"],
        ds=arrays["ds"].astype("datetime64[ns]"), series=arrays["series"], series_ids=arrays["series_ids"].tolist(),
        starts={k: arrays[f"starts_{k}"] for k in SPLITS}, report=artifacts.read_json(artifacts.FEATURES_REPORT.at(folder)),
    )  # fmt: skip


def run_features(cfg: PipelineConfig, run_path: Path, data_parquet: Path) -> dict[str, Any]:
    """Stage entry point: validated long frame -> ``<run>/features/``.

    With ``retrain.start_from`` (a finetune, set by the loop) the champion's preprocessing is
    applied unchanged (:func:`build_finetune_features`).

    Returns:
        ``{"features": folder, "windows": {split: count, ...}, "n_features": F, "history_steps": rows of
        history a forecast needs per series (lookback plus the seasonal lags' reach), "seasonal_lags": [s, ...]}``.
    """
    long = pd.read_parquet(data_parquet)
    if cfg.retrain.start_from is not None:  # retrain.mode finetune: the champion's preprocessing, not refitted
        fs = build_finetune_features(long, cfg, load_preprocessor(cfg.retrain.start_from))
    else:
        fs = build_features(long, cfg)
    target = save_features(fs, artifacts.step_dir(run_path, artifacts.FEATURES), reference=training_part(long, fs.prep))
    log.info("built windows %s with %d features", fs.report["windows"], fs.prep.n_features)
    return {"features": str(target), "windows": fs.report["windows"], "n_features": fs.prep.n_features,
            "history_steps": fs.prep.history_steps, "seasonal_lags": list(fs.prep.seasonal_lags or [])}  # fmt: skip
