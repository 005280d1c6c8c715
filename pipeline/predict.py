"""Forecasts for new data from a registered model: what ``lstm-pipeline forecast`` runs (and
``lstm-pipeline export-onnx``, the same loaded version written as ONNX).

The model is the registered pyfunc (:mod:`pipeline.serving.pyfunc`) loaded from the config's
tracking URI by alias (default ``champion``) or version, so a forecast here is exactly
what the served model gives; the history is a file with the training file's columns.
Output, one row per series and step: ``unique_id, ds, step, yhat``, then the prediction
intervals the version was registered with, ``yhat_lo_<level>, yhat_hi_<level>`` per level of
``evaluation.interval_levels`` (split-conformal, :mod:`pipeline.models.conformal`; none for a
version registered without a calibration), plus ``warning`` when an input lies far outside the
training range. By default the bands are the ones the monitoring loop publishes and the service
returns: the calibrated bands scaled by the quantile tracker's factors as of the latest monitoring
check in the forecast store (:func:`pipeline.loop.monitoring.latest_factors`); ``bands="calibrated"``
(``--bands calibrated``) gives the pyfunc's own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import schema
from pipeline.core.config import PipelineConfig
from pipeline.core.errors import DataLoadError, PipelineError, RegistryError

log = logging.getLogger(__name__)

#: the forecast file's columns, in order (``warning`` only when the model warned)
FORECAST_COLUMNS = [schema.UNIQUE_ID, schema.DS, "step", schema.YHAT]


def read_history(path: Path, cfg: PipelineConfig) -> pd.DataFrame:
    """The history file as the model takes it: CSV (``.csv``, ``.csv.gz``) as text cells, or parquet.

    Raises:
        DataLoadError: the file is missing, empty or unreadable (names the file).
    """
    from pipeline.data.io import read_raw

    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        if not path.is_file():
            raise DataLoadError(f"history file not found: {path}")
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise DataLoadError(f"history file {path} could not be read as parquet: {exc}") from exc
    return read_raw(cfg.data, path)


def resolve_version(client, name: str, alias: str | None, version: int | None) -> tuple[int, str | None]:
    """``(version, alias)`` to load: ``version`` if given, else the one ``alias`` (default ``champion``) points at.

    Raises:
        RegistryError: the model is not registered, the alias is not set, or the version does
            not exist; the message lists what the registry holds.
    """
    import mlflow
    from pipeline.registry import aliases

    try:
        model = client.get_registered_model(name)
    except mlflow.exceptions.MlflowException as exc:
        if aliases.is_not_found(exc):
            raise RegistryError(
                f"no model {name!r} is registered yet: `lstm-pipeline train --config F` registers one when it passes "
                "the comparison gate (mlflow.registered_model_name names it)"
            ) from exc
        raise RegistryError(f"MLflow failed to read registered model {name!r}: {exc}") from exc
    held = {a: int(v) for a, v in (model.aliases or {}).items()}
    versions = sorted(int(v.version) for v in aliases.mlflow_call("list versions", client.search_model_versions, f"name='{name}'"))
    if version is not None:
        if version not in versions:
            raise RegistryError(f"{name} has no version {version}; registered versions: {versions or 'none'}")
        return version, None
    alias = alias or aliases.CHAMPION
    if alias not in held:
        raise RegistryError(f"{name} has no alias {alias!r}; aliases: {held or 'none'}, versions: {versions or 'none'} (use --version V)")
    return held[alias], alias


def load_model(cfg: PipelineConfig, alias: str | None = None, version: int | None = None):
    """``(pyfunc model, version, alias)`` from the config's tracking URI.

    Raises:
        RegistryError: the server is unreachable, or the model, alias or version is missing.
    """
    import mlflow
    from pipeline.registry import server

    client, uri = server.connect(cfg)
    name = cfg.mlflow.registered_model_name
    with server.bounded_http_retries():
        found, alias = resolve_version(client, name, alias, version)
        try:
            return mlflow.pyfunc.load_model(f"models:/{name}/{found}"), found, alias
        except mlflow.exceptions.MlflowException as exc:
            raise RegistryError(f"could not load {name} v{found} from {uri}: {exc}") from exc


def tidy(forecast: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc's ``[unique_id,] ds, step, yhat[, yhat_lo_<level>, yhat_hi_<level> ...][, warning]``
    (``y_hat`` from a version registered before 2026-12-06) -> ``unique_id, ds, step, yhat[, yhat_lo_<level>,
    yhat_hi_<level> ...][, warning]`` (interval columns as the model gave them)."""
    out = schema.with_yhat(forecast).copy()  # the caller's frame stays as the model returned it
    if schema.UNIQUE_ID not in out:
        out.insert(0, schema.UNIQUE_ID, schema.DEFAULT_SERIES_ID)
    bands = [c for c in out.columns if c.startswith(("yhat_lo_", "yhat_hi_"))]
    return out[FORECAST_COLUMNS + bands + (["warning"] if "warning" in out else [])].reset_index(drop=True)


def forecast_history(predict: Callable[[pd.DataFrame], pd.DataFrame], history: pd.DataFrame, where: str) -> pd.DataFrame:
    """``predict(history)`` (a loaded pyfunc's ``predict``) as the tidy frame of :func:`tidy`: the one
    forecast call of ``lstm-pipeline forecast`` and of the online service (:mod:`pipeline.service`).

    Args:
        where: names the history in an error (a file path, ``"request body"``).

    Raises:
        DataQualityError / DataLoadError: the pyfunc's own located errors, unchanged; MLflow's
            input-schema refusals as ``DataLoadError`` naming ``where``.
    """
    try:
        return tidy(predict(history))
    except PipelineError:
        raise
    except Exception as exc:  # MLflow's own input checks
        import mlflow

        if isinstance(exc, mlflow.exceptions.MlflowException):
            raise DataLoadError(f"{where}: the model refused the history: {exc}") from exc
        raise


def write_forecast(frame: pd.DataFrame, out: Path) -> Path:
    """Write ``frame`` to ``out`` (``.parquet``/``.pq``: parquet, anything else: CSV), via a temporary name."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_csv(tmp, index=False)
    tmp.replace(out)
    return out


def run_forecast(
    cfg: PipelineConfig, input_path: Path, alias: str | None = None, version: int | None = None, out: Path | None = None,
    as_records: bool = False, bands: str = "tracked",
) -> dict[str, Any]:  # fmt: skip
    """The model's next ``features.horizon`` steps after the last row of each series in ``input_path``.

    Args:
        input_path: history with the training file's columns on the ``data.freq`` grid, at
            least ``features.lookback`` rows per series ending at the forecast origin (more with seasonal lags:
            ``Preprocessor.history_steps``).
        alias / version: which registered version (default: ``champion``).
        out: where to write the forecasts (CSV or parquet by suffix); ``None`` writes nothing.
        as_records: also return the rows as a list of dicts (``forecast``), for ``--json``.
        bands: ``"tracked"`` (the monitoring loop's bands as of its latest check, the calibrated ones
            when there is none) or ``"calibrated"`` (the pyfunc's own).

    Returns:
        ``{"model", "version", "alias", "input", "rows", "series", "origin_end", "bands", "bands_as_of",
        "bands_warning", "out", "frame"}``: ``frame`` is the ``unique_id, ds (datetime64), step (int), yhat (float64,
        target units)`` frame with ``yhat_lo_<level>, yhat_hi_<level>`` (float64, target units) per
        level when the version has intervals, ``origin_end`` the last forecast timestamp, ``bands``
        ``"tracked"`` (with ``bands_as_of``, the check's as-of time, UTC), ``"calibrated"`` or ``None`` (no
        intervals), ``bands_warning`` why tracked bands fell back to the calibrated ones (the store
        could not be read; ``None`` otherwise).

    Raises:
        DataLoadError / DataQualityError: the file is missing or unusable (column, row, timestamp named).
        RegistryError: no such model, alias or version, or the server is unreachable.
    """
    history = read_history(input_path, cfg)
    model, found, alias = load_model(cfg, alias, version)
    frame = forecast_history(model.predict, history, str(input_path))
    calibration = getattr(model.unwrap_python_model(), "calibration", None)
    tracked, unread = None, None
    if bands == "tracked" and calibration is not None:
        import sqlalchemy as sa

        from pipeline.loop.monitoring import latest_factors, scale_frame_bands
        from pipeline.store.sql import existing_store

        try:
            tracked = latest_factors(cfg, existing_store(cfg), found, calibration)
        except (PipelineError, sa.exc.SQLAlchemyError, OSError, ImportError) as exc:  # the store is optional for a forecast
            unread = f"the forecast store could not be read, so these are the calibrated bands: {exc}"
            log.warning(unread)
        if tracked and tracked[0]:
            frame = scale_frame_bands(frame, calibration, tracked[0])
        else:
            tracked = None
    result = {"model": cfg.mlflow.registered_model_name, "version": found, "alias": alias, "input": str(input_path),
              "rows": len(frame), "series": int(frame[schema.UNIQUE_ID].nunique()),
              "origin_end": str(frame[schema.DS].max()) if len(frame) else None,
              "bands": None if calibration is None else "tracked" if tracked else "calibrated", "bands_as_of": tracked[1] if tracked else None,
              "bands_warning": unread,
              "out": str(write_forecast(frame, out)) if out is not None else None, "frame": frame}  # fmt: skip
    if as_records:
        result["forecast"] = forecast_records(frame)
    return result


def forecast_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The forecast rows as JSON objects (``forecast --json``, the service's ``POST /forecast``): ``ds`` in ISO 8601
    (with its offset when the model has a time zone), ``step`` an int, and an infinite interval bound (a level the
    version had too few calibration windows for, :func:`pipeline.models.conformal.conformal_quantile`) as ``None``
    (JSON ``null``: JSON has no infinity)."""
    out = frame.copy()
    out[schema.DS] = [t.isoformat() for t in pd.DatetimeIndex(out[schema.DS])]
    out["step"] = out["step"].astype(int)
    for col in out.columns[out.dtypes == "float64"]:
        out[col] = out[col].astype(object).where(np.isfinite(out[col].to_numpy()), None)
    return out.to_dict(orient="records")


def export_version_onnx(cfg: PipelineConfig, out: Path, alias: str | None = None, version: int | None = None) -> dict[str, Any]:
    """``lstm-pipeline export-onnx``: a registered version's ensemble as ONNX next to its preprocessing JSON
    (:func:`pipeline.serving.export.export_onnx`; opset 17, dynamic batch, scaled units in and out).

    Returns:
        The export manifest (``export.json``): paths, opset, input/output names and shapes, plus
        ``model``, ``version``, ``alias``.

    Raises:
        RegistryError: no such model, alias or version, or the server is unreachable.
    """
    from pipeline.serving.export import export_onnx

    model, found, alias = load_model(cfg, alias, version)
    python_model = model.unwrap_python_model()
    meta = {"model": cfg.mlflow.registered_model_name, "version": found, "alias": alias}
    return export_onnx(python_model.forecaster, Path(out), meta, getattr(python_model, "calibration", None))
