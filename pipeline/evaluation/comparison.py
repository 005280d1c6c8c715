"""Metrics on the original scale, the comparison table, and the comparison gate.

The one place test metrics are computed: the training and baselines stages write
forecasts only, for the same test origins (:func:`pipeline.evaluation.origins.select_origins`), and this stage scores
them all.

* Origins: the test windows on every ``evaluation.origin_step``-th step of ``data.freq``, one time grid for every series (default: the smallest step that
  leaves at most ``evaluation.max_origins``); the count and the step are reported.
* RMSE and MAE over every (window, step) pair; RMSE per horizon step.
* MASE (Hyndman & Koehler, 2006, "Another look at measures of forecast accuracy"):
  MAE divided by the in-sample MAE of the seasonal-naive forecast on the training
  part (season: :func:`pipeline.core.seasons.season_length`, the configured or derived season; 1 gives the naive forecast).
* Spread over fit windows: each refitted baseline's RMSE per fit, relative to Naive's on
  the same origins, so a baseline whose score depends on where its fit window falls shows it.
* The gate: lower RMSE is better. The LSTM passes when
  ``lstm_rmse <= (1 - gate.min_relative_improvement) * best_baseline_rmse``.
* Prediction intervals (when training wrote a calibration, ``artifacts.INTERVALS``): per level,
  the empirical coverage and mean width of the LSTM's bands on the same test origins
  (:mod:`pipeline.evaluation.intervals`); reported, not gated.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import artifacts, schema
from pipeline.core.config import PipelineConfig
from pipeline.core.errors import DataQualityError, GateFailedError
from pipeline.core.seasons import seasons_past_window
from pipeline.evaluation.intervals import flat_metrics, interval_metrics, interval_text
from pipeline.features.windowing import FeatureSet

log = logging.getLogger(__name__)


def mase_scale(fs: FeatureSet, season_length: int) -> np.ndarray:
    """Per series, the in-sample seasonal-naive MAE on its training rows (original units, NaNs skipped).

    Returns:
        ``(n_series,)`` float64, indexed like ``fs.series_ids``; NaN for a series without a finite positive scale.
        Each series is scaled by its own (Hyndman & Koehler, 2006, "Another look at measures of forecast accuracy",
        IJF 22(4), eq. for q_t): a pooled scale would let a series of large values hide another's errors.
    """
    scales = np.full(len(fs.series_ids), np.nan)
    for k in range(len(fs.series_ids)):
        rows = np.flatnonzero(fs.series == k)
        val_start = pd.Timestamp(fs.prep.split_boundaries[fs.series_ids[k]]["val_start"])
        y = fs.y[rows][fs.ds[rows] < np.datetime64(val_start)]
        d = np.abs(y[season_length:] - y[:-season_length])
        scale = float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")
        scales[k] = scale if scale > 0 else np.nan
    return scales


def forecast_metrics(y_true: np.ndarray, y_pred: np.ndarray, scale: float | np.ndarray) -> dict[str, Any]:
    """``y_true, y_pred: (n_windows, horizon)`` in original units -> rmse, mae, mase, rmse_per_step.

    ``scale``: MASE's scale, one for all windows or ``(n_windows,)`` (each window's series' :func:`mase_scale`);
    MASE is the mean of the absolute errors divided by their window's scale (NaN when a scale is not finite).

    Raises:
        ValueError: shapes differ.
    """
    if y_true.shape != y_pred.shape:
        raise ValueError(f"expected forecasts of shape {y_true.shape}, got {y_pred.shape}")
    err = y_pred - y_true
    per_window = np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(err),))
    usable = bool(len(err)) and bool(np.isfinite(per_window).all() and (per_window > 0).all())
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "mase": float(np.mean(np.abs(err) / per_window[:, None])) if usable else float("nan"),
        "rmse_per_step": np.sqrt(np.mean(err**2, axis=0)).tolist(),
    }


@dataclass
class GateDecision:
    """Outcome of the comparison gate, with every reason (lower RMSE is better)."""

    passed: bool
    lstm_rmse: float
    best_baseline: str | None
    best_baseline_rmse: float | None
    threshold_rmse: float | None
    min_relative_improvement: float
    relative_improvement: float | None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> GateDecision:
        """The decision :meth:`to_dict` wrote (``gate.json``); unknown keys are ignored."""
        return cls(**{k: payload[k] for k in cls.__dataclass_fields__ if k in payload})

    @classmethod
    def load(cls, evaluation_dir: Path) -> GateDecision:
        """The gate verdict of an evaluation folder (``artifacts.GATE``): what registration requires."""
        return cls.from_dict(artifacts.read_json(artifacts.GATE.at(evaluation_dir)))

    def raise_if_failed(self) -> GateDecision:
        if not self.passed:
            raise GateFailedError("; ".join(self.reasons))
        return self


def comparison_gate(lstm_rmse: float, baseline_rmse: dict[str, float], min_relative_improvement: float) -> GateDecision:
    """Pass when ``lstm_rmse <= (1 - m) * min(baseline_rmse)`` over the finite ones; a baseline with a non-finite RMSE is
    named in the reasons as not compared. Never raises (see ``raise_if_failed``)."""
    m = min_relative_improvement
    finite = {k: v for k, v in baseline_rmse.items() if np.isfinite(v)}
    if not np.isfinite(lstm_rmse):
        return GateDecision(False, lstm_rmse, None, None, None, m, None, [f"LSTM RMSE is {lstm_rmse}: not a usable model"])
    if not finite:
        reason = "no baseline produced a finite RMSE, so the LSTM cannot be shown to beat one"
        return GateDecision(False, lstm_rmse, None, None, None, m, None, [reason])
    best = min(finite, key=finite.get)
    best_rmse, threshold = finite[best], (1 - m) * finite[best]
    rel = 1 - lstm_rmse / best_rmse if best_rmse > 0 else float("-inf")
    passed = lstm_rmse <= threshold
    verdict = "passes" if passed else "fails"
    reasons = [
        f"LSTM RMSE {lstm_rmse:.4f} vs best baseline {best} {best_rmse:.4f}: {rel:+.1%} improvement "
        f"(required >= {m:.1%}, i.e. RMSE <= {threshold:.4f}); the gate {verdict}"
    ]
    reasons += [f"{name} RMSE {v:.4f}" for name, v in sorted(finite.items(), key=lambda kv: kv[1])]
    reasons += [f"{name} RMSE {v}: not compared (its test forecasts were not all finite)" for name, v in sorted(baseline_rmse.items()) if name not in finite]
    return GateDecision(passed, lstm_rmse, best, best_rmse, threshold, m, rel, reasons)


def noise_floor(cfg: PipelineConfig) -> float | None:
    """The RMSE no forecaster can beat, when the data says: a generated series' ``noise_std``; ``None`` for a file."""
    synthetic = cfg.data.synthetic
    return float(synthetic.noise_std) if synthetic is not None and cfg.data.path is None else None


def gate_guidance(cfg: PipelineConfig, gate: GateDecision, train_info: dict[str, Any], training_rmse: float, season_length: int,
                  resolved_lags: list[int] | None = None) -> list[str]:  # fmt: skip
    """For a failed gate: what was compared, the noise floor if known, and what to try next (empty when it passed).

    Each line is advice read off the run: the config's tuned-looking values, the windows against the
    season, whether training hit its epoch limit, in-sample against test RMSE. Nothing is changed.
    """
    if gate.passed or gate.best_baseline is None or not np.isfinite(gate.lstm_rmse):
        return []
    fc, mc, tc, m = cfg.features, cfg.model, cfg.training, gate.min_relative_improvement
    out = [f"compared: LSTM test RMSE {gate.lstm_rmse:.4g} against the best of {', '.join(cfg.baselines.models or ()) or 'the default baselines'} "
           f"({gate.best_baseline} {gate.best_baseline_rmse:.4g}) on the same test origins, {fc.horizon} step(s) ahead; "
           f"the gate needs RMSE <= {gate.threshold_rmse:.4g} ({m:.0%} better)"]  # fmt: skip
    floor = noise_floor(cfg)
    if floor is None:
        out.append("noise floor: unknown for a data file (for a generated series it is its noise_std)")
    else:
        reachable = gate.threshold_rmse is not None and gate.threshold_rmse > floor
        out.append(f"noise floor: RMSE {floor:.4g} (the series' noise_std); the gate's bar {gate.threshold_rmse:.4g} is "
                   + ("above it: reachable" if reachable else "below it: no forecaster can pass it; the baseline is already near the floor"))
    if not mc.ar_highway:
        out.append("try: remove model.ar_highway: false (a value tuned for another series; the default highway is on)")
    if fc.lookback < season_length:
        out.append(f"try: features.lookback >= one season ({season_length} steps; now {fc.lookback})")
    past = seasons_past_window(cfg.data.freq, fc.lookback, fc.horizon, fc.seasonal_lag_window)
    if past and fc.seasonal_lags == ():
        out.append(f"try: features.seasonal_lags: {list(past)} (the target one season back as inputs: seasons of data.freq the window does not reach)")
    elif past and fc.seasonal_lags is None and resolved_lags is not None and not set(past) <= set(resolved_lags):
        out.append(f"try: features.seasonal_lags: {list(past)} (derived but not used: their lags fall into gaps for more than 1% of the "
                   "training windows, or need more history than a quarter of the training part; the features stage logs each season's "
                   "share. Set explicitly, they cost those windows)")  # fmt: skip
    if any(e >= tc.max_epochs for e in train_info.get("epochs_run", [])):
        out.append(f"try: a higher training.max_epochs (every member ran all {tc.max_epochs} epochs)")
    budget = {"max_steps": f"training.max_steps ({tc.max_steps})", "max_time": f"training.max_time ({tc.max_time})"}
    cut = sorted({budget[r] for r in train_info.get("stop_reason", []) if r in budget})
    if cut:
        out.append(f"try: a larger {' and '.join(cut)} or null for no limit (the training budget, not early stopping, ended training)")
    if np.isfinite(training_rmse) and training_rmse < 0.7 * gate.lstm_rmse:
        out.append(f"try: more regularisation (in-sample RMSE {training_rmse:.4g} is far below the test RMSE: overfitting): model.dropout, training.weight_decay, a smaller model.hidden_size")
    if tc.n_seeds == 1:
        out.append("try: training.n_seeds: 3 (an average of three members is steadier)")
    out.append(f"or keep {gate.best_baseline}: when no setting beats it by {m:.0%}, it is the better forecaster for this series; "
               "lowering gate.min_relative_improvement only registers a model that is not clearly better")
    return out


def fit_spread(truth: np.ndarray, forecasts: dict[str, np.ndarray], fit_of_row: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per refitted model: RMSE of each fit's origins, and relative to Naive's RMSE on those origins.

    ``truth`` and ``forecasts[name]``: ``(n, horizon)``; ``fit_of_row[name]``: ``(n,)`` fit number.
    Returns ``{name: {"n_fits", "rmse_by_fit", "relative_to_naive_by_fit", "relative_min", "relative_max"}}``.
    """
    out = {}
    naive = forecasts.get(schema.NAIVE)
    for name, fit in fit_of_row.items():
        if name not in forecasts or len(np.unique(fit)) < 2:
            continue
        rmse, rel = [], []
        for j in np.unique(fit):
            rows = fit == j
            rmse.append(float(np.sqrt(np.mean((forecasts[name][rows] - truth[rows]) ** 2))))
            if naive is not None:
                rel.append(rmse[-1] / float(np.sqrt(np.mean((naive[rows] - truth[rows]) ** 2))))
        out[name] = {"n_fits": len(rmse), "rmse_by_fit": rmse, "relative_to_naive_by_fit": rel,
                     "relative_min": min(rel) if rel else None, "relative_max": max(rel) if rel else None}  # fmt: skip
    return out


def _spread_reasons(spread: dict[str, dict[str, Any]]) -> list[str]:
    return [
        f"{name}: {s['n_fits']} fit windows, RMSE relative to Naive {s['relative_min']:.3f}-{s['relative_max']:.3f} across them"
        for name, s in spread.items() if s["relative_min"] is not None and name != schema.NAIVE
    ]  # fmt: skip


def comparison_table(metrics: dict[str, dict[str, Any]], timings: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per model: model, rmse, mae, mase, fit_seconds, predict_seconds (sorted by rmse)."""
    rows = [
        {"model": name, "rmse": m["rmse"], "mae": m["mae"], "mase": m["mase"], **timings.get(name, {})}
        for name, m in metrics.items()
    ]
    table = pd.DataFrame(rows, columns=["model", "rmse", "mae", "mase", "fit_seconds", "predict_seconds"])
    return table.sort_values("rmse", kind="stable").reset_index(drop=True)


def plot_forecasts(fs: FeatureSet, forecasts: dict[str, np.ndarray], path: Path, index: np.ndarray, n_points: int = 500,
                   bands: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> Path:  # fmt: skip
    """Step-1 forecasts vs actuals over the first ``n_points`` scored test windows (``index``),
    and the full ``h``-step forecast of the last one, as a PNG.

    ``bands``: the LSTM's prediction intervals ``{level_label: (lo, hi)}``, each ``(n_origins, horizon)``
    like the forecasts, drawn as shaded bands (the widest palest) in both panels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = fs.starts["test"][index]
    ds = fs.ds[starts[:n_points] + fs.prep.lookback]
    actual = fs.targets("test")[index]
    fig, axes = plt.subplots(2, 1, figsize=(11, 7))
    last = starts[-1] + fs.prep.lookback
    steps = fs.ds[last : last + fs.prep.horizon]
    for k, (label, (lo, hi)) in enumerate(sorted((bands or {}).items(), key=lambda kv: -float(kv[0]))):
        shade = {"color": "tab:blue", "alpha": 0.15 + 0.15 * k, "lw": 0, "label": f"{schema.LSTM} {label}% interval"}
        axes[0].fill_between(ds, lo[:n_points, 0], hi[:n_points, 0], **shade)
        if len(steps) > 1:
            axes[1].fill_between(steps, lo[-1], hi[-1], **shade)
        else:  # one step: a bar, as a band of one point has no width
            axes[1].vlines(steps, lo[-1], hi[-1], lw=10, **{k: v for k, v in shade.items() if k != "lw"})
    axes[0].plot(ds, actual[:n_points, 0], color="black", lw=1.2, label="actual")
    for name, pred in forecasts.items():
        axes[0].plot(ds, pred[:n_points, 0], lw=0.9, label=name)
    axes[0].set_title(f"one-step-ahead forecasts, first {len(ds)} scored test origins")
    axes[1].plot(steps, actual[-1], color="black", marker="o", ms=3, label="actual")
    for name, pred in forecasts.items():
        axes[1].plot(steps, pred[-1], marker=".", label=name)
    axes[1].set_title(f"{fs.prep.horizon}-step forecast from the last scored test origin")
    for ax in axes:
        ax.set_ylabel(fs.prep.target_column)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _load_forecasts(training_dir: Path, baselines_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, dict]:
    """LSTM and baseline test forecasts on the same windows, the LSTM's train forecasts and their index.

    Raises:
        DataQualityError: the two stages forecast different test windows (config changed between them).
    """
    with np.load(artifacts.TRAINING_FORECASTS.at(training_dir)) as z:
        forecasts, index = {schema.LSTM: z["test"]}, z["test_index"]
        train = {"forecasts": z["train"], "index": z["train_index"]}
    with np.load(artifacts.BASELINE_FORECASTS.at(baselines_dir)) as z:
        if not np.array_equal(z["index"], index):
            raise DataQualityError(
                f"the LSTM was scored on {len(index)} test windows and the baselines on {len(z['index'])} different ones "
                f"({training_dir} vs {baselines_dir}); run both stages with the same evaluation settings"
            )
        fits = {k[: -len("_fit")]: z[k] for k in z.files if k.endswith("_fit")}
        forecasts.update({k: z[k] for k in z.files if k != "index" and not k.endswith("_fit")})
    return forecasts, fits, index, train


def test_times(fs: FeatureSet, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scored test windows' ``(origin_time (n,), known_time (n, h))`` as int64 nanoseconds: when each
    origin is forecast and each step observed (the quantile tracker's clock, :func:`interval_metrics`)."""
    ns = lambda t: np.asarray(t).astype("datetime64[ns]").astype(np.int64)  # noqa: E731
    return ns(fs.origin_times("test")[index]), ns(fs.target_times("test")[index])


def _intervals(
    training_dir: Path, truth: np.ndarray, lstm: np.ndarray, history: np.ndarray, origin_step: int,
    times: tuple[np.ndarray, np.ndarray] | None = None, tracking_lr: float = 0.0,
) -> tuple[Any, dict[str, dict[str, Any]], dict | None]:  # fmt: skip
    """``(calibration or None, per-level test coverage and width, bands for the plot)`` from the training folder
    (``history``: ``(n_origins, lookback)``, the target over each scored origin's lookback; ``origin_step``: steps
    between them; ``times`` and ``tracking_lr``: the quantile tracker's replay, :func:`interval_metrics`)."""
    from pipeline.models.conformal import IntervalCalibration

    path = artifacts.INTERVALS.at(training_dir)
    if not path.exists():
        return None, {}, None
    calibration = IntervalCalibration.load(path)
    intervals = interval_metrics(calibration, truth, lstm, history, origin_step, times, tracking_lr)
    for label, m in intervals.items():
        log.info("%s (n=%d)", interval_text(label, m), m["n"])
    return calibration, intervals, calibration.bands(lstm, history)


def run_comparison(cfg: PipelineConfig, run_path: Path, features_dir: Path, training_dir: Path, baselines_dir: Path) -> dict[str, Any]:
    """Stage entry point: score every model on the same test origins; decide the gate.

    Writes ``<run>/evaluation/{metrics.json, comparison.csv, comparison.json, gate.json, forecast.png}``;
    ``metrics.json`` is the LSTM's summary the registry logs (``lstm_rmse``, ``lstm_mae``,
    ``lstm_mase``, ``training_rmse``, ``rmse_per_step``, ``device``, ``train_seconds``,
    ``n_origins``, ``origin_step``, and with a calibration ``intervals``:
    ``{level: {"coverage", "mean_width", "n", "coverage_per_step", "width_per_step", "coverage_ci", "ci_confidence",
    "ci_block", "tracked"}}`` (:func:`pipeline.evaluation.intervals.interval_metrics`; ``tracked``: the
    bands the monitoring loop publishes, the quantile tracker replayed over the test origins with
    ``evaluation.interval_tracking_lr``) and ``interval_calibration`` ``{"source", "n_windows"}``). Returns ``{"gate_passed", "lstm_rmse", "training_rmse",
    "best_baseline", "best_baseline_rmse", "baselines": {name: rmse}, "evaluation": folder, ...}``
    plus ``test_coverage_<level>`` (share in [0, 1]), ``test_width_<level>`` (target units) and the coverage's
    95% confidence interval ``test_ci_low_coverage_<level>`` / ``test_ci_high_coverage_<level>`` per level,
    and the same for the tracked bands (``test_tracked_coverage_<level>`` ...; none with a step size of 0).

    Raises:
        DataQualityError: the training and baselines stages forecast different test windows.
    """
    from pipeline.core.seasons import season_length
    from pipeline.features.windowing import load_features

    fs = load_features(features_dir)
    forecasts, fits, index, train = _load_forecasts(training_dir, baselines_dir)
    truth = fs.targets("test")[index]
    season = season_length(cfg)
    scales = mase_scale(fs, season)
    scale = scales[fs.series[fs.starts["test"][index]]]  # each test window's series' scale
    train_info = artifacts.read_json(artifacts.TRAINING_FACTS.at(training_dir))
    base_info = artifacts.read_json(artifacts.BASELINE_TIMINGS.at(baselines_dir))
    metrics = {name: forecast_metrics(truth, pred, scale) for name, pred in forecasts.items()}
    in_sample = forecast_metrics(fs.targets("train")[train["index"]], train["forecasts"], scales[fs.series[fs.starts["train"][train["index"]]]])
    timings = {schema.LSTM: {"fit_seconds": train_info["train_seconds"], "predict_seconds": train_info.get("predict_seconds", float("nan"))}}
    timings.update({k: {"fit_seconds": v["fit_seconds"], "predict_seconds": v["predict_seconds"]} for k, v in base_info["timings"].items()})
    table = comparison_table(metrics, timings)
    baseline_rmse = {k: v["rmse"] for k, v in metrics.items() if k != schema.LSTM}
    gate = comparison_gate(metrics[schema.LSTM]["rmse"], baseline_rmse, cfg.gate.min_relative_improvement)
    spread = fit_spread(truth, forecasts, fits)
    gate.reasons += _spread_reasons(spread) + [f"scored on {len(index)} of {len(fs.starts['test'])} test windows (every {base_info['origin_step']})"]
    lstm = metrics[schema.LSTM]
    calibration, intervals, bands = _intervals(training_dir, truth, forecasts[schema.LSTM], fs.lookback_targets(fs.starts["test"][index]),
                                              int(base_info["origin_step"]), test_times(fs, index), cfg.evaluation.interval_tracking_lr)  # fmt: skip
    summary = {
        "lstm_rmse": lstm["rmse"], "lstm_mae": lstm["mae"], "lstm_mase": lstm["mase"], "rmse_per_step": lstm["rmse_per_step"],
        "training_rmse": in_sample["rmse"], "device": train_info["device"], "train_seconds": train_info["train_seconds"],
        "n_origins": int(len(index)), "origin_step": int(base_info["origin_step"]), "n_test_windows": int(len(fs.starts["test"])),
        "n_train_origins": int(len(train["index"])),
        **({"intervals": intervals, "interval_calibration": {"source": calibration.source, "n_windows": calibration.n_windows}} if calibration else {}),
    }  # fmt: skip
    target = artifacts.step_dir(run_path, artifacts.EVALUATION)
    with artifacts.atomic_dir(target) as tmp:
        artifacts.write_json(artifacts.EVALUATION_METRICS.at(tmp), summary)
        table.to_csv(artifacts.COMPARISON_TABLE.at(tmp), index=False, float_format="%.6g")
        artifacts.write_json(artifacts.COMPARISON.at(tmp), {
            "metrics": metrics, "mase_scale": dict(zip(map(str, fs.series_ids), scales.tolist(), strict=True)), "n_windows": int(len(index)), "origin_step": summary["origin_step"],
            "n_test_windows": summary["n_test_windows"], "fit_spread": spread, "skipped": base_info["skipped"],
        })  # fmt: skip
        next_steps = gate_guidance(cfg, gate, train_info, in_sample["rmse"], season, resolved_lags=list(fs.prep.seasonal_lags))
        artifacts.write_json(artifacts.GATE.at(tmp), {**gate.to_dict(), "next_steps": next_steps})
        plot_forecasts(fs, forecasts, artifacts.FORECAST_PLOT.at(tmp), index, bands=bands)
    for reason in gate.reasons[:1]:
        (log.info if gate.passed else log.warning)("gate: %s", reason)
    return {
        "gate_passed": gate.passed, "lstm_rmse": gate.lstm_rmse, "training_rmse": summary["training_rmse"],
        "best_baseline": gate.best_baseline, "best_baseline_rmse": gate.best_baseline_rmse,
        "baselines": baseline_rmse, "evaluation": str(target), "gate_reasons": gate.reasons, "gate_next_steps": next_steps,
        "n_origins": summary["n_origins"], "origin_step": summary["origin_step"], **flat_metrics(intervals),
    }  # fmt: skip
