"""The monitoring check, as of ``T``: forecast, score, drift, decide (LOOP.md sections 1-4).

Stages (the Airflow DAG runs one per task; :func:`run_check` chains them in-process):

1. :func:`forecast`: resolve the ``champion`` (and ``challenger`` / ``previous_champion``)
   versions once, read the observations with ``ds < T`` (never the wall clock) and
   validate them with the training suite, then forecast every origin in
   ``[since, T)`` with each version's registered pyfunc (multi-origin mode) and upsert
   the forecasts into the store with the alias each version held. The champion's
   forecasts are the published ones; the others are shadow forecasts for the canary.
2. :func:`score`: join every stored forecast whose target is now observed with its
   ``y``; compute the champion's rolling RMSE.
3. :func:`detect_drift`: Evidently report of the window against the version's reference
   sample (``pipeline/loop/drift.py``).
4. :func:`decide`: the rule and its guards, then the check row (every number used),
   the MLflow monitoring run and the log line.

The rule: ``rolling_rmse`` is the RMSE over every step of the champion's forecasts
whose origin lies in ``[T - monitoring.window, T)`` and whose ``h`` targets are all
observed (complete origins, so every step weighs as in ``training_rmse``, which is the
RMSE over all steps of the training windows in original units: like for like).
``retrain`` when ``rolling_rmse > monitoring.rmse_ratio x training_rmse`` with at least
``monitoring.min_origins`` complete origins; with ``monitoring.retrain_on_drift``, also
when the last ``monitoring.drift_checks`` checks (this one included) all drifted.

Decisions, first match wins: ``no_champion`` (nothing registered under ``champion``);
``invalid_data`` (the observations fail validation: nothing is forecast or scored, the
check lists the failed rows); ``stale_data`` (the last observation is older than
``monitoring.max_staleness`` at ``T``); ``data_fault`` (the target or a covariate changed
units, stuck, or left its range: ``pipeline/loop/data_faults.py``; the rule's trigger is held
and no retrain is triggered); ``insufficient_data`` (fewer than ``min_origins``
complete origins); ``cooldown`` (the rule fires but a retrain was triggered less than
``monitoring.cooldown`` before ``T``, or a challenger is still in its canary); ``retrain``;
``ok``. Each check has a deterministic id (``<model>@<T>``) and trigger run id, so a
rerun of the same interval rewrites the same rows and cannot trigger twice.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import artifacts, schema
from pipeline.core.config import PipelineConfig
from pipeline.core.errors import MonitoringError, SchemaValidationError
from pipeline.core.seasons import season_length, seasonal_lag_reach, steps_per_day
from pipeline.data.io import long_to_raw, to_utc_naive
from pipeline.evaluation.cusum import reference_of_version
from pipeline.registry.aliases import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION
from pipeline.registry.server import bounded_http_retries

log = logging.getLogger(__name__)

SHADOW_ALIASES = (CHALLENGER, PREVIOUS_CHAMPION)
OBSERVED, REFERENCE, CHECK = artifacts.CHECK_OBSERVED.name, artifacts.CHECK_REFERENCE.name, artifacts.CHECK_RESULT.name
RESULT_KEYS = (
    "as_of", "champion_version", "n_origins_scored", "rolling_rmse", "training_rmse", "threshold",
    "naive_rmse", "drift_share", "drifted_columns", "decision", "reasons", "report", "check_id",
    "interval_coverage", "interval_factors", "interval_tracking_lr", "data_faults",
)  # fmt: skip
#: the last reason of a ``data_fault`` decision
NO_RETRAIN = "no retrain: a data fault (a unit change, a stuck or out-of-range value) is fixed at its source, not by a new model"


# ------------------------------------------------------------------ ids and time


def as_of_iso(as_of) -> str:
    from pipeline.data.io import as_of_timestamp

    return as_of_timestamp(as_of).isoformat()


def check_id(model_name: str, as_of) -> str:
    """``<model>@<T ISO>``: one check per model and ``T``; a rerun overwrites it."""
    return f"{model_name}@{as_of_iso(as_of)}"


def trigger_run_id(check: str) -> str:
    """The ``lstm_training`` run id a retrain of check ``check`` gets (deterministic, path-safe)."""
    return "retrain__" + artifacts.safe_run_id(check)


def default_out_dir(cfg: PipelineConfig, as_of) -> Path:
    return Path(cfg.run.artifact_root) / "monitoring" / artifacts.safe_run_id(check_id(cfg.mlflow.registered_model_name, as_of))


def _step(cfg: PipelineConfig) -> pd.Timedelta:
    return pd.Timedelta(pd.tseries.frequencies.to_offset(cfg.data.freq))


# ------------------------------------------------------------------ registry


def _client(cfg: PipelineConfig):
    """An MLflow client on the configured tracking URI, after a bounded health check."""
    from pipeline.registry.server import connect

    return connect(cfg)[0]


def resolve_aliases(client, name: str) -> dict[str, dict[str, Any]]:
    """``{alias: {"version": int, "tags": dict}}`` for champion, challenger, previous_champion.

    One read of the registered model's alias map (an alias that is not set is left out;
    a model that does not exist gives ``{}``); any other MLflow error is raised.

    Raises:
        RegistryError: MLflow answered with an error other than ``RESOURCE_DOES_NOT_EXIST``.
    """
    from pipeline.registry.aliases import mlflow_call, snapshot

    found = snapshot(client, name)
    wanted = {a: found[a] for a in (CHAMPION, *SHADOW_ALIASES) if a in found}
    return {a: {"version": v, "tags": dict(mlflow_call(f"read {name} v{v}", client.get_model_version, name, str(v)).tags)} for a, v in wanted.items()}


def load_version(name: str, version: int):
    """The registered pyfunc of ``name`` v``version`` (``models:/<name>/<version>``), unwrapped to :class:`ForecastModel`.

    Loaded by the version the alias pointed to when the check resolved it, so the
    forecasts, the scores and the check row all name the model that made them.
    """
    import mlflow
    from pipeline.registry.aliases import mlflow_call

    return mlflow_call(f"load models:/{name}/{version}", mlflow.pyfunc.load_model, f"models:/{name}/{version}").unwrap_python_model()


def reference_of(model, name: str, version: int) -> Path:
    """The version's drift reference sample (artifact ``reference``).

    Raises:
        MonitoringError: the version was registered before reference samples existed.
    """
    path = getattr(model, "reference_path", None)
    if not path or not Path(path).exists():
        raise MonitoringError(
            f"model {name!r} version {version} has no reference sample for drift (artifact 'reference', the "
            "training part's raw columns): it was registered before monitoring existed. Fix: retrain and "
            "register a new version (`lstm-pipeline train --config ...`), then point 'champion' at it."
        )
    return Path(path)


# ------------------------------------------------------------------ observations


def _relabel_lines(text: str, index: pd.Index) -> str:
    """Validation names lines of the slice it saw; map them back to lines of the file."""
    return re.sub(r"line (\d+)", lambda m: f"line {int(index[int(m.group(1)) - 2]) + 2}" if int(m.group(1)) - 2 < len(index) else m.group(0), text)


def read_observations(cfg: PipelineConfig, as_of, start, data_path: Path | None = None) -> tuple[pd.DataFrame | None, dict]:
    """Validated long frame of the rows with ``start <= ds < T``, and facts about the data.

    Returns:
        ``(long or None, info)``; ``info``: ``last_observed`` (latest ``ds < T`` with a target
        value, ISO or ``None``), ``rows``, and on a failed validation ``failures`` (each with
        file line numbers); then ``long`` is ``None``.
    """
    from pipeline.data.io import as_of_timestamp, parse_timestamps, read_raw, rows_before
    from pipeline.data.validation import validate_frame

    d, T = cfg.data, as_of_timestamp(as_of)
    raw = rows_before(read_raw(d, data_path), d, T)
    ts = parse_timestamps(raw, d, strict=False) if d.timestamp_column in raw else None
    has_y = pd.to_numeric(raw[d.target_column], errors="coerce").notna() if d.target_column in raw else None
    last = ts[has_y].max() if ts is not None and has_y is not None else None
    info: dict[str, Any] = {"last_observed": None if last is None or pd.isna(last) else last.isoformat()}
    part = raw[ts.isna() | (ts >= as_of_timestamp(start))] if ts is not None else raw
    info["rows"] = int(len(part))
    if part.empty:
        return None, info
    try:
        long = validate_frame(part, cfg, source=f"observations {start} <= ds < {T}").frame
    except SchemaValidationError as err:
        info["failures"] = [{**f, "examples": [_relabel_lines(e, part.index) for e in f["examples"]]} for f in err.failures]
        return None, info
    return long, info


# ------------------------------------------------------------------ stage 1: forecast


def _since(cfg: PipelineConfig, store, T: pd.Timestamp, since) -> pd.Timestamp:
    """First origin this check is responsible for: ``since``, else the previous check's ``T``; at most one window back."""
    from pipeline.data.io import as_of_timestamp

    floor = T - pd.Timedelta(cfg.monitoring.window)
    if since is None:
        previous = store.last_checks(cfg.mlflow.registered_model_name, 1, before=T)
        since = previous[0]["as_of"] if previous else floor
    return max(as_of_timestamp(since), floor)


def _forecast_version(model, history: pd.DataFrame, info: dict, alias: str, name: str, since, T) -> pd.DataFrame:
    frame = schema.with_yhat(model.predict(None, history, params={"origins": "all", "origin_start": since.isoformat(), "origin_end": T.isoformat()}))
    frame["origin"], frame[schema.DS] = to_utc_naive(frame["origin"]), to_utc_naive(frame[schema.DS])  # the store's clock
    return frame.assign(model_name=name, version=info["version"], alias=alias, as_of=T)


def track_bands(cfg: PipelineConfig, store, model, frame: pd.DataFrame, name: str, version: int, since) -> tuple[pd.DataFrame, dict[str, list[float]]]:
    """The version's forecasts ``frame`` with its calibrated bands scaled by the quantile tracker.

    Per level and horizon step, the factor is :func:`pipeline.models.conformal.tracked_factor` over
    the version's own published bands of that step whose outcome was observed before ``since`` (the
    check's first origin), one update per origin time, with step size
    ``evaluation.interval_tracking_lr``; the levels are then kept nested
    (:func:`pipeline.models.conformal.nest_bands`). A band that is infinite (too few calibration
    windows) is neither counted nor scaled. :func:`forecast` scores the stored forecasts against its
    observations before ``since`` first, so a rerun of the check on the same data counts the same
    outcomes and publishes the same bands. Cost: one read of the version's scored bands before
    ``since``, growing with the version's age (docs/BENCHMARKS.md "Tracked intervals").

    Args:
        frame: the pyfunc's ``origins="all"`` output (``step`` 1..h, ``ds`` UTC-naive, ``yhat`` and
            ``yhat_lo_<level>``/``yhat_hi_<level>``), changed in place.
        version: the version that made ``frame``; since: ``pd.Timestamp`` (UTC-naive).

    Returns:
        ``(frame, {level_label: [factor per step]})``; ``{}`` with the frame unchanged for a version
        without intervals or ``lr`` 0.
    """
    calibration, lr = getattr(model, "calibration", None), cfg.evaluation.interval_tracking_lr
    if calibration is None or lr == 0 or frame.empty:
        return frame, {}
    out = tracked_factors(store, name, version, since, calibration, lr)
    return scale_frame_bands(frame, calibration, out), out


def scale_frame_bands(frame: pd.DataFrame, calibration, factors: dict[str, list[float]]) -> pd.DataFrame:
    """``frame``'s calibrated bands with their half-widths scaled by ``factors`` ``{level_label: [factor per
    step 1..h]}`` (:func:`tracked_factors`), in the calibration's score space
    (:meth:`~pipeline.models.conformal.IntervalCalibration.scale_bands`), then kept nested
    (:func:`pipeline.models.conformal.nest_bands`); an infinite band stays as it is. The one scaling of
    the published bands (:func:`track_bands`) and of the served ones (:mod:`pipeline.service`,
    ``lstm-pipeline forecast``).

    Args:
        frame: ``step`` (int, 1..h), ``yhat`` and ``yhat_lo_<level>``/``yhat_hi_<level>`` per level of
            ``factors`` (float64, target units); changed in place and returned.
    """
    from pipeline.models.conformal import nest_bands

    bands = {}
    for label, per_step in factors.items():
        lo_col, hi_col = schema.interval_columns(float(label))
        finite = np.isfinite(frame[lo_col]) & np.isfinite(frame[hi_col])
        factor = np.where(finite, np.asarray(per_step)[frame["step"].to_numpy().astype(int) - 1], 1.0)
        bands[label] = calibration.scale_bands(frame[schema.YHAT].to_numpy(), frame[lo_col].to_numpy(), frame[hi_col].to_numpy(), factor)
    for label, (lo, hi) in nest_bands(bands).items():
        lo_col, hi_col = schema.interval_columns(float(label))
        frame[lo_col], frame[hi_col] = lo, hi
    return frame


def latest_factors(cfg: PipelineConfig, store, version: int, calibration, check: dict[str, Any] | None = None) -> tuple[dict[str, list[float]], str] | None:
    """``(factors, as_of)``: the quantile tracker's factors for ``version`` as of the latest monitoring check
    (:func:`tracked_factors` over the outcomes before that check's ``as_of``, which its score stage has
    scored), the bands to serve from then on. For origins after that check they equal the factors the
    next check publishes with (its ``since`` is that ``as_of``), up to observations that arrive late.

    That equality holds when the next check starts where the latest one ended (``since`` its ``as_of``:
    the DAG's ``data_interval_start`` on a schedule without gaps) and keeps the step size; a check
    that starts later, or after a check that scored nothing (``invalid_data``), counts other outcomes.
    The step is the check's own ``interval_tracking_lr`` (recorded with it since 2026-12-07), so the
    reader's config does not change it; the reader's ``evaluation.interval_tracking_lr`` for an older check.

    Args:
        check: the check row to track as of (``as_of``, ISO 8601, and ``interval_tracking_lr``, as
            recorded); ``None``: the latest in ``store``.

    Returns ``None`` (serve the calibrated bands) for a version without intervals, ``interval_tracking_lr``
    0, no store (``store`` ``None``) or no check yet. Cost: one read of the version's scored bands
    (docs/BENCHMARKS.md "Tracked intervals").

    Raises:
        StoreError: the store is unreachable.
    """
    from pipeline.data.io import as_of_timestamp

    if calibration is None or store is None:
        return None
    if check is None:
        checks = store.last_checks(cfg.mlflow.registered_model_name, n=1)
        if not checks:
            return None
        check = checks[0]
    as_of, lr = check["as_of"], check.get("interval_tracking_lr")
    lr = cfg.evaluation.interval_tracking_lr if lr is None else float(lr)
    if lr == 0:
        return None
    return tracked_factors(store, cfg.mlflow.registered_model_name, version, as_of_timestamp(as_of), calibration, lr), as_of


def tracked_factors(store, name: str, version: int, since, calibration, lr: float) -> dict[str, list[float]]:
    """``{level_label: [factor per step 1..h]}``: :func:`pipeline.models.conformal.tracked_factor` over the
    version's published bands (finite ones) whose outcome is scored with ``ds < since`` (UTC-naive); one read
    of :meth:`~pipeline.store.sql.ForecastStore.scored_intervals`, the cost :func:`track_bands` pays per alias."""
    from pipeline.models.conformal import tracked_factor

    scored = store.scored_intervals(name, version, until=since)
    lo, hi, y = (scored[c].astype(np.float64) for c in ("lo", "hi", "y"))  # an empty read has object columns
    scored = scored[(scored[schema.DS] < since) & np.isfinite(lo) & np.isfinite(hi) & y.notna()]
    out = {}
    for level in calibration.levels:
        rows = scored[np.isclose(scored["level"], level)]
        missed = (~((rows["lo"] <= rows["y"]) & (rows["y"] <= rows["hi"]))).to_numpy()
        step, origin = rows["step"].to_numpy(), rows["origin"].to_numpy()
        out[schema.level_label(level)] = [tracked_factor(missed[step == j], level, lr, origin[step == j]) for j in range(1, calibration.horizon + 1)]
    return out


@bounded_http_retries()
def forecast(cfg: PipelineConfig, as_of, since=None, data_path: Path | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """Stage 1: forecast the origins in ``[since, T)`` with every aliased version; store them.

    Returns (XCom-sized): ``as_of, since, model_name, check_id, out_dir, status`` (``ready`` |
    ``no_champion`` | ``invalid_data``), ``versions`` ``{alias: version}``, ``training_rmse``,
    ``last_observed``, ``n_forecasts`` ``{alias: rows}``, ``failures``, ``data_faults`` (the
    :class:`~pipeline.loop.data_faults.DataFault` rows as dicts, over the observations before ``T``)
    and, for versions with intervals, ``interval_factors`` ``{alias: {level_label: [factor per step]}}``:
    the quantile tracker's scaling of the published bands (:func:`track_bands`).

    Raises:
        RegistryError: the tracking server is unreachable (bounded retries). StoreError:
            the store is unreachable. MonitoringError: the champion lacks its reference sample.
    """
    from pipeline.data.io import as_of_timestamp
    from pipeline.store.sql import store_for

    T, name, store = as_of_timestamp(as_of), cfg.mlflow.registered_model_name, store_for(cfg)
    out = Path(out_dir) if out_dir else default_out_dir(cfg, T)
    out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"as_of": T.isoformat(), "model_name": name, "check_id": check_id(name, T), "out_dir": str(out),
                             "versions": {}, "n_forecasts": {}, "failures": [], "status": "ready"}  # fmt: skip
    aliases = resolve_aliases(_client(cfg), name)
    state["versions"] = {a: v["version"] for a, v in aliases.items()}
    state["interval_tracking_lr"] = cfg.evaluation.interval_tracking_lr  # what latest_factors reads back
    start = _since(cfg, store, T, since)
    state["since"] = start.isoformat()
    if CHAMPION not in aliases:
        state["status"] = "no_champion"
        return state
    state["training_rmse"] = _training_rmse(aliases[CHAMPION], name, cfg.monitoring.inherit_training_rmse)
    state["training_rmse_from"] = aliases[CHAMPION]["tags"].get("inherited_from") if cfg.monitoring.inherit_training_rmse else None
    state["reference_model"] = reference_of_version(cfg.monitoring.naive_model, aliases[CHAMPION]["tags"])
    if cfg.monitoring.rule == "cusum":  # the champion's own detector (pipeline/loop/detectors.py)
        state["detector"] = {k: v for k, v in aliases[CHAMPION]["tags"].items() if k.startswith("cusum.")}
    span = (cfg.features.lookback + seasonal_lag_reach(cfg) + cfg.features.horizon + cfg.data.max_gap) * _step(cfg)
    long, info, faults = _read_with_faults(cfg, T, min(start, T - pd.Timedelta(cfg.monitoring.window)) - span, data_path)
    state.update(last_observed=info["last_observed"], failures=info.get("failures", []), data_faults=faults)
    if info.get("failures"):
        state["status"] = "invalid_data"
        return state
    models = {}
    for alias, v in aliases.items():
        if alias != CHAMPION and v["version"] == aliases[CHAMPION]["version"]:
            continue
        models[alias] = load_version(name, v["version"])
    shutil.copyfile(reference_of(models[CHAMPION], name, aliases[CHAMPION]["version"]), out / REFERENCE)
    if long is None:
        return state
    long.to_parquet(out / OBSERVED, index=False)
    history = long_to_raw(long, cfg.data)
    # the outcomes before this check's first origin, scored now (the score stage rescores the same rows): the
    # tracker counts the same outcomes on a first run and on a rerun (track_bands)
    store.score(long[long[schema.DS] < start], as_of=T)
    for alias, model in models.items():
        frame = _forecast_version(model, history, aliases[alias], alias, name, start, T)
        frame, factors = track_bands(cfg, store, model, frame, name, aliases[alias]["version"], start)
        if factors:
            state.setdefault("interval_factors", {})[alias] = factors
        state["n_forecasts"][alias] = store.upsert_forecasts(frame)
    log.info("check %s: forecast origins [%s, %s) with %s", state["check_id"], start, T, state["versions"])
    return state


def _read_with_faults(cfg: PipelineConfig, T: pd.Timestamp, first: pd.Timestamp, data_path) -> tuple[pd.DataFrame | None, dict, list[dict]]:
    """:func:`read_observations` from ``first``, and the data faults (``pipeline/loop/data_faults.py``).

    The alerts need a longer span (their reference window): it is read once and cut back to
    ``first`` for the rest of the check. When the longer span fails validation, the check's own
    span is read again and judged as before (invalid_data only for its own rows), and the
    faults are looked for in that shorter span.
    """
    from pipeline.loop import data_faults

    if not cfg.monitoring.alerts.enabled:
        return (*read_observations(cfg, T, first, data_path), [])
    long, info = read_observations(cfg, T, min(first, T - data_faults.lookback(cfg)), data_path)
    if info.get("failures"):
        long, info = read_observations(cfg, T, first, data_path)
        faults = [] if info.get("failures") else data_faults.detect(long, cfg, T)
        return long, info, [f.as_dict() for f in faults]
    faults = [f.as_dict() for f in data_faults.detect(long, cfg, T)]
    if long is not None:
        long = long[long[schema.DS] >= first].reset_index(drop=True)
    return (None if long is None or long.empty else long), info, faults


def _training_rmse(info: dict, name: str, inherit: bool = False) -> float:
    """The version's ``training_rmse`` tag, or with ``inherit`` its ``inherited_training_rmse`` when it has one
    (``monitoring.inherit_training_rmse``: :func:`pipeline.registry.registration.inherited_tags`)."""
    try:
        if inherit and info["tags"].get("inherited_training_rmse"):
            return float(info["tags"]["inherited_training_rmse"])
        return float(info["tags"]["training_rmse"])
    except (KeyError, ValueError) as exc:
        raise MonitoringError(
            f"model {name!r} version {info['version']} has no numeric 'training_rmse' tag (found "
            f"{info['tags'].get('training_rmse')!r}); the retrain rule compares against it. Fix: register the version with this pipeline."
        ) from exc


# ------------------------------------------------------------------ stage 2: score


def rolling_rmse(scored: pd.DataFrame, horizon: int) -> tuple[float, int]:
    """RMSE over every step of the complete origins (all ``horizon`` targets scored), and their count.

    Args:
        scored: ``unique_id, origin, step, yhat, y`` (from ``ForecastStore.scored``).

    Returns:
        ``(rmse in original units or NaN when there is none, n_complete_origins)``.
    """
    if scored.empty:
        return float("nan"), 0
    n_steps = scored.groupby([schema.UNIQUE_ID, "origin"])["step"].transform("size")
    complete = scored[n_steps == horizon]
    if complete.empty:
        return float("nan"), 0
    err = complete[schema.YHAT].to_numpy() - complete["y"].to_numpy()
    return float(np.sqrt(np.mean(err**2))), int(len(complete) // horizon)


def naive_forecast_frame(scored: pd.DataFrame, observed: pd.DataFrame, model: str = "naive", season: int = 24, step: pd.Timedelta | None = None) -> np.ndarray:
    """The (seasonal) naive forecast of every scored row, from the observations only.

    Args:
        scored: ``unique_id, origin, step, ds`` rows (``origin`` = the last input time,
            ``ds = origin + step x freq``).
        observed: long ``unique_id, ds, y`` observations (as of ``T``: only ``ds < T``).
        model: ``naive``: ``y`` at the origin; ``seasonal_naive``: ``y`` at
            ``ds - season x ceil(step / season)`` steps (the last same-phase value at or
            before the origin, statsforecast's SeasonalNaive).
        season: season length in steps. step: the series' time step (default: 1 hour).

    Returns:
        ``(len(scored),)`` float64 in target units; NaN where that observation is missing.
    """
    if scored.empty:
        return np.empty(0)
    unit = step if step is not None else pd.Timedelta(hours=1)
    if model == "naive":
        at = scored["origin"]
    elif model == "seasonal_naive":
        back = -(-scored["step"].astype(int) // season) * season
        at = scored["ds"] - back * unit
    else:
        raise MonitoringError(f"monitoring.naive_model: expected 'naive' or 'seasonal_naive', found {model!r}")
    obs = observed.dropna(subset=[schema.Y])
    y = pd.Series(obs[schema.Y].to_numpy(dtype=np.float64), index=pd.MultiIndex.from_arrays([obs[schema.UNIQUE_ID].astype(str), pd.to_datetime(obs[schema.DS])]))
    y = y[~y.index.duplicated(keep="last")]
    keys = pd.MultiIndex.from_arrays([scored[schema.UNIQUE_ID].astype(str), pd.to_datetime(at)])
    return y.reindex(keys).to_numpy(dtype=np.float64)


def naive_rolling_rmse(scored: pd.DataFrame, observed: pd.DataFrame, horizon: int, model: str = "naive", season: int = 24,
                       step: pd.Timedelta | None = None) -> tuple[float, float, int]:  # fmt: skip
    """The champion's and the naive forecast's RMSE on the same complete origins, and their count.

    An origin counts when all ``horizon`` steps are scored and the naive forecast exists
    for each (an origin without its observation is left out of both RMSEs, so the two
    numbers cover exactly the same forecasts).

    Returns:
        ``(champion rmse, naive rmse, n_origins)`` in target units; NaNs and 0 when none.
    """
    if scored.empty:
        return float("nan"), float("nan"), 0
    frame = scored.assign(naive=naive_forecast_frame(scored, observed, model, season, step))
    per_origin = frame.groupby([schema.UNIQUE_ID, "origin"])
    ok = (per_origin["step"].transform("size") == horizon) & per_origin["naive"].transform(lambda v: bool(np.isfinite(v).all()))
    both = frame[ok.to_numpy(dtype=bool)]
    if both.empty:
        return float("nan"), float("nan"), 0
    y = both["y"].to_numpy()
    champ = float(np.sqrt(np.mean((both[schema.YHAT].to_numpy() - y) ** 2)))
    naive = float(np.sqrt(np.mean((both["naive"].to_numpy() - y) ** 2)))
    return champ, naive, int(len(both) // horizon)


def score(cfg: PipelineConfig, state: dict[str, Any]) -> dict[str, Any]:
    """Stage 2: score every stored forecast whose target is observed; the champion's rolling RMSE.

    Adds ``n_scored, rolling_rmse, n_origins_scored, naive_rmse, threshold`` to ``state`` (a
    new dict). ``naive_rmse`` is the (seasonal) naive forecast's RMSE on the champion's
    complete origins, from the observations as of ``T``; with ``monitoring.rule`` ``naive``
    or ``both`` the rolling RMSE is taken over exactly those origins too.
    """
    from pipeline.store.sql import store_for

    state = dict(state)
    observed = Path(state["out_dir"]) / OBSERVED
    if state["status"] != "ready" or not observed.exists():
        return {**state, "n_scored": 0, "rolling_rmse": None, "n_origins_scored": 0, "naive_rmse": None, "threshold": _threshold(cfg, state)}
    store, T, mc = store_for(cfg), pd.Timestamp(state["as_of"]), cfg.monitoring
    obs = pd.read_parquet(observed)
    state["n_scored"] = store.score(obs, as_of=T)
    scored = store.scored(state["model_name"], state["versions"][CHAMPION], since=T - pd.Timedelta(mc.window), until=T)
    rmse, n = rolling_rmse(scored, cfg.features.horizon)
    champ, naive, n_naive = naive_rolling_rmse(scored, obs[obs[schema.DS] < T], cfg.features.horizon, _reference(cfg, state),
                                               season_length(cfg), _step(cfg))  # fmt: skip
    if mc.rule != "training_rmse":  # the skill rule compares the two on the same origins
        rmse, n = champ, n_naive
    state.update(rolling_rmse=None if math.isnan(rmse) else rmse, n_origins_scored=n, naive_rmse=None if math.isnan(naive) else naive)
    state["threshold"] = _threshold(cfg, state)
    state["interval_coverage"] = interval_coverage(store, state, T - pd.Timedelta(mc.window), T)
    if mc.rule == "cusum":
        state["cusum"] = _cusum(cfg, state, scored, obs[obs[schema.DS] < T], store)
    return state


def interval_coverage(store, state: dict[str, Any], since, until) -> dict[str, dict[str, Any]]:
    """Rolling coverage of the champion's published prediction intervals: per level, the share of
    scored forecasts with origins in ``[since, until)`` whose observed ``y`` lies in ``[lo, hi]``.

    Returns:
        ``{level: {"level", "coverage" (share in [0, 1]), "mean_width" (target units), "n"}}``
        (:func:`pipeline.evaluation.intervals.rolling_coverage`); ``{}`` for a champion without intervals.
        Recorded with the check (its row's ``payload`` in the store, ``check.json``) and as MLflow
        metrics ``coverage_<level>``; informational: the retrain rule does not read it.
    """
    from pipeline.evaluation.intervals import rolling_coverage

    return rolling_coverage(store.scored_intervals(state["model_name"], state["versions"][CHAMPION], since=since, until=until))


def _cusum(cfg: PipelineConfig, state: dict, scored: pd.DataFrame, observed: pd.DataFrame, store) -> dict[str, Any]:
    """The ``cusum`` rule's state after this check (:func:`pipeline.loop.detectors.cusum_update`)."""
    from pipeline.loop import detectors

    version = state["versions"][CHAMPION]
    tags = state.get("detector") or {}
    detector = detectors.detector_of(tags, state["model_name"], version)
    fast = detectors.fast_limb_of(tags, state["model_name"], version)
    # the reference the detector was calibrated against (its ``cusum.reference`` tag), whatever the config says now
    frame = scored.assign(naive=naive_forecast_frame(scored, observed, detector.reference, season_length(cfg), _step(cfg)))
    previous = store.last_checks(state["model_name"], 50, before=state["as_of"])
    return detectors.cusum_update(detector, frame, cfg.features.horizon, _step(cfg), previous, version, fast)


def _reference(cfg: PipelineConfig, state: dict) -> str:
    """The champion's reference forecast: ``monitoring.naive_model``, or for ``auto`` the version's
    ``monitoring.reference`` tag (:func:`pipeline.evaluation.cusum.reference_of_version`)."""
    return state.get("reference_model") or reference_of_version(cfg.monitoring.naive_model, {})


def _threshold(cfg: PipelineConfig, state: dict) -> float | None:
    """The rolling RMSE above which the rule fires: ``rmse_ratio x training RMSE`` (rule
    ``training_rmse``), ``naive_ratio x naive RMSE`` (``naive``), the larger of the two (``both``);
    ``None`` for ``cusum`` (its decision interval is in the check's ``cusum``)."""
    mc = cfg.monitoring
    if mc.rule == "cusum":
        return None
    rmse, naive = state.get("training_rmse"), state.get("naive_rmse")
    by_training = None if rmse is None else mc.rmse_ratio * rmse
    by_naive = None if naive is None else mc.naive_ratio * naive
    if mc.rule == "training_rmse":
        return by_training
    if mc.rule == "naive":
        return by_naive
    return None if by_training is None or by_naive is None else max(by_training, by_naive)


# ------------------------------------------------------------------ stage 3: drift


def detect_drift(cfg: PipelineConfig, state: dict[str, Any]) -> dict[str, Any]:
    """Stage 3: Evidently drift of the window ``[T - window, T)`` against the champion's reference.

    Adds ``drift_share, drifted_columns, drift_scores, drifted, report`` (``{"html", "json"}``
    paths or ``None`` when there was nothing to compare) and ``drift_unscored`` (``{column: why}``,
    a covariate without a value in the window: named in the reasons, left out of the share).
    """
    from pipeline.loop import drift

    state = {**state, "drift_share": None, "drifted_columns": [], "drift_scores": {}, "drifted": False, "report": None, "drift_unscored": {}}
    out = Path(state["out_dir"])
    if state["status"] != "ready" or not (out / OBSERVED).exists():
        return state
    T = pd.Timestamp(state["as_of"])
    current = pd.read_parquet(out / OBSERVED)
    current = current[current[schema.DS] >= T - pd.Timedelta(cfg.monitoring.window)]
    numeric, categorical = drift.drift_columns(list(cfg.data.covariates), list(cfg.data.categorical_covariates))
    if current[schema.Y].notna().sum() == 0:
        return state
    result = drift.detect(pd.read_parquet(out / REFERENCE), current, numeric, categorical, cfg.monitoring)
    report = result.save(out)
    return {**state, "drift_share": result.drift_share, "drifted_columns": result.drifted_columns,
            "drift_scores": result.scores, "drifted": result.drifted, "report": report, "drift_unscored": result.unscored}  # fmt: skip


# ------------------------------------------------------------------ stage 4: decide


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _rule(cfg: PipelineConfig, state: dict, previous: list[dict]) -> tuple[str | None, list[str]]:
    """The triggers that fire (``rmse`` / ``drift``), or ``None``, with the reasons."""
    mc, reasons, fired = cfg.monitoring, [], []
    rmse, threshold = state.get("rolling_rmse"), state.get("threshold")
    terms = {
        "training_rmse": f"{mc.rmse_ratio:g} x training RMSE {_fmt(state.get('training_rmse'))}"
        + (f" (inherited from {state['training_rmse_from']})" if state.get("training_rmse_from") else ""),
        "naive": f"{mc.naive_ratio:g} x {_reference(cfg, state)} RMSE {_fmt(state.get('naive_rmse'))} on the same origins",
    }
    term = terms[mc.rule] if mc.rule in terms else f"the larger of {terms['training_rmse']} and {terms['naive']}"
    if mc.rule == "cusum":
        fired_cusum, reason = _cusum_reason(cfg, state.get("cusum"))
        fired += ["cusum"] if fired_cusum else []
        reasons.append(reason)
    elif rmse is not None and threshold is not None and rmse > threshold:
        fired.append("rmse")
        reasons.append(f"rolling RMSE {rmse:.4g} > {term} = {threshold:.4g} over {state['n_origins_scored']} origins")
    else:
        reasons.append(f"rolling RMSE {_fmt(rmse)} <= threshold {_fmt(threshold)} ({term})")
    if state.get("drifted"):
        streak = 1 + sum(1 for _ in _takewhile_drifted(previous[: mc.drift_checks - 1]))
        reasons.append(f"drift: {len(state['drifted_columns'])} column(s) drifted {state['drifted_columns']} (share {state['drift_share']:.2f} >= {mc.drift_share:g}); {streak} consecutive drifted check(s)")
        if mc.retrain_on_drift and streak >= mc.drift_checks:
            fired.append("drift")
    elif state.get("drift_share") is not None:
        reasons.append(f"no dataset drift: column(s) drifted {state['drifted_columns']} (share {state['drift_share']:.2f} < {mc.drift_share:g})")
    if state.get("drift_unscored"):
        reasons.append("drift not scored for " + "; ".join(f"{c}: {why}" for c, why in state["drift_unscored"].items()))
    return ("+".join(fired) or None), reasons


def _cusum_reason(cfg: PipelineConfig, c: dict | None) -> tuple[bool, str]:
    if not c:
        return False, "CUSUM: no scored origins yet"
    mc = cfg.monitoring
    what = f"CUSUM of the champion v{c['version']}'s loss differential against {c.get('reference', mc.naive_model)} (k {c['k']:.3g}, calibrated for ARL0 {c['arl0']})"
    fast = c.get("fast")
    if fast and c.get("limbs") == ["fast"]:
        clipped = "no clip" if fast["clip"] is None else f"scores clipped at {fast['clip']:.3g} MADs"
        return True, (f"{what}: its fast limb (k {fast['k']:.3g}, {clipped}) reached {fast['max_statistic']:.4g} > "
                      f"decision interval {fast['h']:.4g} over {c['n_new']} new origin(s); the slow limb at {c['max_statistic']:.4g} <= {c['h']:.4g}")  # fmt: skip
    also = ""
    if fast:
        if "fast" in (c.get("limbs") or []):
            also = f"; fast limb at {fast['max_statistic']:.4g} > {fast['h']:.4g} (signalled too)"
        else:
            also = f"; fast limb at {fast['max_statistic']:.4g} <= {fast['h']:.4g}"
    if c["alarm"]:
        return True, f"{what} reached {c['max_statistic']:.4g} > decision interval {c['h']:.4g} over {c['n_new']} new origin(s){also}"
    return False, f"{what} at {c['statistic']:.4g} <= decision interval {c['h']:.4g} ({c['n_new']} new origin(s)){also}"


def _takewhile_drifted(previous: list[dict]):
    for check in previous:
        if not check.get("drifted"):
            return
        yield check


def _guards(cfg: PipelineConfig, state: dict, previous: list[dict]) -> str | None:
    """Why a firing rule must hold this time (cooldown / challenger in canary), else ``None``."""
    T = pd.Timestamp(state["as_of"])
    if CHALLENGER in state["versions"] and state["versions"][CHALLENGER] != state["versions"].get(CHAMPION):
        return f"challenger v{state['versions'][CHALLENGER]} is still in its canary: no new retrain until it is promoted or rejected"
    for check in previous:
        if check.get("decision") == "retrain" and T - pd.Timestamp(check["as_of"]) < pd.Timedelta(cfg.monitoring.cooldown):
            return f"a retrain was triggered at {check['as_of']} (check {check['check_id']}), within the cooldown {cfg.monitoring.cooldown}"
    return None


def _decision(cfg: PipelineConfig, state: dict, previous: list[dict]) -> tuple[str, list[str], str | None]:
    """``(decision, reasons, trigger)``: first match wins (see the module docstring)."""
    mc, T = cfg.monitoring, pd.Timestamp(state["as_of"])
    if state["status"] == "no_champion":
        return "no_champion", [f"model {state['model_name']!r} has no version with alias 'champion': nothing to monitor"], None
    if state["status"] == "invalid_data":
        rows = "; ".join(f"{f['expectation']} on {f['column']!r}: {f['unexpected_count']} row(s), e.g. {f['examples'][:3]}" for f in state["failures"])
        return "invalid_data", [f"the observations failed validation, nothing was forecast or scored: {rows}"], None
    last = state.get("last_observed")
    age = None if last is None else T - pd.Timestamp(last)
    if age is None or age > pd.Timedelta(mc.max_staleness):
        return "stale_data", [f"no new observation for {age or 'ever'} before {T} (last at {last}; max_staleness {mc.max_staleness})"], None
    trigger, reasons = _rule(cfg, state, previous)
    if state.get("data_faults"):  # before decay: a unit change is fixed at its source, not by a new model
        return "data_fault", [*(f["message"] for f in state["data_faults"]), *reasons, NO_RETRAIN], trigger
    if state["n_origins_scored"] < mc.min_origins:
        return "insufficient_data", [f"{state['n_origins_scored']} complete origins scored in the window, {mc.min_origins} needed", *reasons], None
    if trigger is None:
        return "ok", reasons, None
    held = _guards(cfg, state, previous)
    if held:
        return "cooldown", [*reasons, held], trigger
    return "retrain", reasons, trigger


@bounded_http_retries()
def decide(cfg: PipelineConfig, state: dict[str, Any]) -> dict[str, Any]:
    """Stage 4: decision, check row (store), ``check.json``, MLflow monitoring run, log line.

    Returns:
        The check: ``as_of, champion_version, n_origins_scored, rolling_rmse, training_rmse,
        threshold, drift_share, drifted_columns, decision, reasons, report, check_id`` plus
        ``trigger`` (``rmse`` / ``drift`` / ``rmse+drift`` / ``None``), ``trigger_run_id``,
        ``conf`` (what a retrain's ``lstm_training`` run gets), ``versions`` and the details.
    """
    from pipeline.store.sql import store_for

    store = store_for(cfg)
    previous = store.last_checks(state["model_name"], max(cfg.monitoring.drift_checks, 10), before=state["as_of"])
    decision, reasons, trigger = _decision(cfg, state, previous)
    check = {
        **{k: state.get(k) for k in RESULT_KEYS}, "champion_version": state["versions"].get(CHAMPION),
        "decision": decision, "reasons": reasons, "trigger": trigger if decision == "retrain" else None,
        "held_trigger": trigger if decision in ("cooldown", "data_fault") else None,
        "trigger_run_id": trigger_run_id(state["check_id"]) if decision == "retrain" else None,
        **{k: state.get(k) for k in ("model_name", "since", "versions", "last_observed", "failures", "n_forecasts",
                                     "n_scored", "drift_scores", "drifted", "out_dir", "cusum")},
        "data_faults": state.get("data_faults") or [],
    }  # fmt: skip
    check["conf"] = _conf(cfg, check) if decision == "retrain" else None
    artifacts.write_json(Path(state["out_dir"]) / CHECK, check)
    if check["champion_version"] is not None:
        _log_mlflow(cfg, check)
    store.record_check(check)  # last: a check that failed earlier leaves no row
    store.record_alerts(check)
    (log.warning if decision in ("retrain", "stale_data", "invalid_data", "data_fault") else log.info)(
        "check %s: decision %s; %s", check["check_id"], decision, " | ".join(reasons)
    )
    for fault in check["data_faults"]:
        log.warning("DATA FAULT %s %s (%s) since %s: %s", check["check_id"], fault["column"], fault["kind"], fault["since"], fault["message"])
    return check


def validation_tail_steps(cfg: PipelineConfig) -> int:
    """``retrain.validation_steps``, or ``max(2 x h, one day of data.freq steps)`` when unset.

    Short on purpose: the steps just before ``T`` are the post-fault ones a retrain has to learn
    from, and every step in the tail is one the model does not train on. Two horizons give
    ``h + 1`` fully observed windows for early stopping; a day covers the daily cycle once.
    """
    return cfg.retrain.validation_steps or max(2 * cfg.features.horizon, steps_per_day(cfg.data.freq))


def retrain_config(cfg: PipelineConfig) -> PipelineConfig:
    """The config a retrain triggered by monitoring (or a replay policy) trains with (docs/LOOP.md 8).

    ``retrain.mode: refit`` (default): ``features.validation_tail_steps`` =
    :func:`validation_tail_steps` (train through ``T`` up to the tail; the tail validates and is
    the sanity-check test part) and the gate's margin = ``retrain.min_relative_improvement``.
    ``finetune``: the same tail and gate; the caller then names the champion it starts from
    (:func:`pipeline.loop.finetune.start_from_champion`).
    ``scheduled``: ``features.recent_train_steps = monitoring.retrain_recent_steps`` when that
    is set (the most recent days go into the training part), otherwise ``cfg`` itself.
    """
    if cfg.retrain.mode in ("refit", "finetune"):
        features = cfg.features.model_copy(update={"validation_tail_steps": validation_tail_steps(cfg), "recent_train_steps": 0})
        gate = cfg.gate.model_copy(update={"min_relative_improvement": cfg.retrain.min_relative_improvement})
        return cfg.model_copy(update={"features": features, "gate": gate})
    steps = cfg.monitoring.retrain_recent_steps
    if not steps:
        return cfg
    return cfg.model_copy(update={"features": cfg.features.model_copy(update={"recent_train_steps": steps})})


def retrain_tags(tcfg: PipelineConfig) -> dict[str, str]:
    """What a triggered training run records about its protocol (MLflow tags)."""
    f = tcfg.features
    tags = {"retrain.mode": tcfg.retrain.mode}
    if f.validation_tail_steps:
        tags["retrain.validation_steps"] = str(f.validation_tail_steps)
    if f.recent_train_steps:
        tags["recent_train_steps"] = str(f.recent_train_steps)
    return tags


def triggered_config(cfg: PipelineConfig, trigger: str | dict | None) -> tuple[PipelineConfig, dict[str, str]]:
    """The config and the MLflow tags of a training run that a check's retrain trigger started.

    What the Airflow training DAG does from its run's ``conf`` (``resolve_config``, ``register_model``), for an
    orchestrator that passes the trigger as a parameter (the Kubeflow monitoring pipeline's nested retrain).

    Args:
        trigger: the check's ``conf`` (:func:`decide`; its keys are :func:`_conf`'s), a dict or its JSON text.
            Empty, ``{}``, ``None`` or a conf without ``check_id``: not a trigger.

    Returns:
        ``(retrain_config(cfg), {"trigger.<key>": value as text, ...})`` for a trigger (null values left out),
        else ``(cfg, {})``.

    Raises:
        ConfigError: ``trigger`` is text but not a JSON object; or ``retrain.mode`` is ``finetune``, which needs the
            champion's weights copied into the run first (:func:`pipeline.loop.finetune.start_from_champion`;
            only the Airflow DAG does that).
    """
    import json

    from pipeline.core.errors import ConfigError

    if isinstance(trigger, str):
        try:
            trigger = json.loads(trigger) if trigger.strip() else {}
        except json.JSONDecodeError as exc:
            raise ConfigError(f"trigger: expected the check's conf as a JSON object, found {trigger[:200]!r} ({exc})") from None
    if not isinstance(trigger, dict | None):
        raise ConfigError(f"trigger: expected the check's conf as a JSON object, found {type(trigger).__name__}")
    if not trigger or not trigger.get("check_id"):
        return cfg, {}
    if cfg.retrain.mode == "finetune":
        raise ConfigError("retrain.mode: finetune starts from the champion's weights, which only the Airflow training DAG copies "
                          "into the run; this orchestrator runs refit or scheduled retrains: set retrain.mode to one of them")  # fmt: skip
    return retrain_config(cfg), {f"trigger.{k}": str(v) for k, v in trigger.items() if v is not None}


def _conf(cfg: PipelineConfig, check: dict) -> dict[str, Any]:
    """The retrain trigger's ``conf`` (recorded as ``trigger.<key>`` tags on the training run).

    ``config_path``, ``data_path`` and ``as_of`` are ``lstm_training`` params: the retrain
    uses this use case and exactly the data that existed at ``T``.
    """
    return {
        "reason": f"monitoring {check['trigger']}: " + check["reasons"][0], "as_of": check["as_of"],
        "rolling_rmse": check["rolling_rmse"], "threshold": check["threshold"], "drift_share": check["drift_share"],
        "check_id": check["check_id"], "champion_version": check["champion_version"],
        "config_path": str(cfg.source) if cfg.source else None, "data_path": str(cfg.data.path) if cfg.data.path else None,
    }  # fmt: skip


def _log_mlflow(cfg: PipelineConfig, check: dict) -> None:
    """Metrics over time in one MLflow run per champion version, the reports as artifacts of the check.

    Raises:
        RegistryError: MLflow failed a request (after the bounded retries of :func:`decide`); no check row is written.
    """
    import mlflow
    from pipeline.core.errors import RegistryError

    try:
        _log_check_run(cfg, check)
    except mlflow.exceptions.MlflowException as exc:
        raise RegistryError(f"MLflow failed to log check {check['check_id']} (monitoring experiment {cfg.monitoring.experiment_name!r}): {exc}") from exc


def _log_check_run(cfg: PipelineConfig, check: dict) -> None:
    from mlflow.entities import Metric

    from pipeline.registry.server import artifact_location, tracking_uri

    client = _client(cfg)
    name, version = check["model_name"], check["champion_version"]
    exp = client.get_experiment_by_name(cfg.monitoring.experiment_name)
    exp_id = exp.experiment_id if exp else client.create_experiment(cfg.monitoring.experiment_name, artifact_location=artifact_location(cfg, tracking_uri(cfg)))
    key = f"{name}-v{version}"
    found = client.search_runs([exp_id], filter_string=f"tags.monitored_model_version = '{key}'", max_results=1)
    run_id = found[0].info.run_id if found else client.create_run(exp_id, run_name=f"monitor {key}", tags={"monitored_model_version": key, "monitored_model": name, "monitored_version": str(version)}).info.run_id
    T = pd.Timestamp(check["as_of"])
    ms, step = int(T.timestamp() * 1000), int(T.timestamp() // 3600)  # step: hours since the epoch, so reruns overwrite the point's x
    values = {k: check.get(k) for k in ("rolling_rmse", "threshold", "training_rmse", "naive_rmse", "drift_share", "n_origins_scored")}
    values.update({f"coverage_{k}": v["coverage"] for k, v in (check.get("interval_coverage") or {}).items() if v["n"]})
    # the quantile tracker's mean band factor over the steps, as published by this check (1: the calibrated bands)
    values.update({f"interval_factor_{k}": float(np.mean(v)) for k, v in ((check.get("interval_factors") or {}).get(CHAMPION) or {}).items()})
    client.log_batch(run_id, metrics=[Metric(k, float(v), ms, step) for k, v in values.items() if v is not None])
    folder = Path(check["out_dir"])
    for path in (folder / CHECK, *(Path(p) for p in (check.get("report") or {}).values())):
        client.log_artifact(run_id, str(path), artifact_path=f"checks/{artifacts.safe_run_id(check['check_id'])}")
    client.set_tag(run_id, "last_decision", f"{check['decision']} @ {check['as_of']}")


# ------------------------------------------------------------------ the whole check


def run_check(cfg: PipelineConfig, as_of, data_path: Path | None = None, out_dir: Path | None = None, since=None) -> dict[str, Any]:
    """One monitoring check as of ``T`` (``as_of``): forecast -> score -> drift -> decide.

    Args:
        as_of: ``T``; only observations with ``ds < T`` are read.
        data_path: observations CSV instead of ``data.path``.
        out_dir: where ``observed.parquet``, ``reference.parquet``, the drift report
            (HTML + JSON) and ``check.json`` go (default ``<artifact_root>/monitoring/<check id>/``).
        since: first origin to forecast (default: the previous check's ``T``, at most one window back).

    Returns:
        The check dict of :func:`decide` (``decision`` is one of ok, retrain,
        insufficient_data, cooldown, no_champion, stale_data, invalid_data, data_fault).

    Raises:
        RegistryError, StoreError: the tracking server or the store is unreachable after
            bounded retries (no check row is written). MonitoringError: the champion lacks
            its reference sample or its ``training_rmse`` tag.
    """
    state = forecast(cfg, as_of, since=since, data_path=data_path, out_dir=out_dir)
    return decide(cfg, detect_drift(cfg, score(cfg, state)))
