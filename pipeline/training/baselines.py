"""The baselines stage: every statistical baseline on the evaluated test origins, in parallel.

The forecasters are :mod:`pipeline.models.baselines`; this stage picks the origins once
(:func:`pipeline.evaluation.origins.select_origins`), plans the fits, runs them (joblib
processes when ``baselines.n_jobs != 1``) and writes ``<run>/baselines/``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core import artifacts
from pipeline.core.config import PipelineConfig
from pipeline.core.progress import Progress
from pipeline.models.baselines import StatsBaseline, origins_of, resolve_baselines, run_task

log = logging.getLogger(__name__)


def run_tasks(tasks: list[dict], n_jobs: int, progress: bool, log_every: float = 30.0):
    """Yield each task's result in order; joblib processes when ``n_jobs != 1``.

    Progress (:class:`pipeline.core.progress.Progress`): a bar on a terminal; elsewhere (a
    file, Airflow's log) one plain line (done, elapsed, expected remaining) at most every
    ``log_every`` seconds.
    """
    if n_jobs == 1 or len(tasks) <= 1:
        results = map(run_task, tasks)
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(run_task)(t) for t in tasks)
    t0 = time.perf_counter()
    with Progress(len(tasks), "baseline fits", "fit", enabled=progress, every_s=log_every) as bar:
        for done, result in enumerate(results, start=1):
            left = (time.perf_counter() - t0) / done * (len(tasks) - done)
            bar.update(1, left=f"about {left:.0f}s")
            yield result


def run_baselines(cfg: PipelineConfig, run_path: Path, features_dir: Path) -> dict[str, Any]:
    """Stage entry point: forecast the evaluated test origins with every baseline, save ``<run>/baselines/``.

    Writes ``forecasts.npz`` (one ``(n_origins, horizon)`` array per model, ``index``: the
    test windows forecast, ``<model>_fit``: each row's fit number) and ``timings.json``
    (seconds and the model chosen by each fit). Returns ``{"baselines", "models", "skipped", "origins"}``.
    """
    from pipeline.evaluation.origins import select_origins
    from pipeline.features.windowing import load_features

    fs = load_features(features_dir)
    spec = resolve_baselines(cfg)
    index, step = select_origins(fs.origin_times("test"), cfg.evaluation, fs.prep.freq)
    origins = origins_of(fs, "test", index)
    models = [StatsBaseline(name, spec) for name in spec.models]
    jobs = [(m, t) for m in models for t in m.tasks(fs, origins)]
    outputs = {m.name: np.empty((len(origins), fs.prep.horizon)) for m in models}
    for m in models:
        m.segment_, m.fits_, m.predict_seconds_ = np.zeros(len(origins), np.int32), [], 0.0
    t0 = time.perf_counter()
    for (model, task), result in zip(jobs, run_tasks([t for _, t in jobs], spec.n_jobs, spec.progress), strict=True):
        model._store(task, result, outputs[model.name])
    seconds = time.perf_counter() - t0
    timings = {
        m.name: {"fit_seconds": float(sum(f["fit_seconds"] for f in m.fits_)),
                 "predict_seconds": float(sum(f["forecast_seconds"] for f in m.fits_)), "fits": m.fits_}
        for m in models
    }  # fmt: skip
    for m in models:
        log.info("%s: %d fit(s), %.1fs fitting; models %s", m.name, len(m.fits_), timings[m.name]["fit_seconds"], sorted({f["model"] for f in m.fits_}))
    target = artifacts.step_dir(run_path, artifacts.BASELINES)
    with artifacts.atomic_dir(target) as tmp:
        np.savez(artifacts.BASELINE_FORECASTS.at(tmp), index=index, **outputs, **{f"{m.name}_fit": m.segment_ for m in models})
        artifacts.write_json(artifacts.BASELINE_TIMINGS.at(tmp), {
            "timings": timings, "skipped": {}, "stage_seconds": seconds, "origin_step": step, "n_origins": len(origins),
            "spec": {k: v for k, v in spec.__dict__.items()},
        })  # fmt: skip
    log.info("baselines: %d model(s) on %d test origins (every %d) in %.1fs", len(models), len(origins), step, seconds)
    return {"baselines": str(target), "models": list(outputs), "skipped": {}, "origins": len(origins)}
