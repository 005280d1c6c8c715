"""The training stages, in order: one list for every orchestrator.

The CLI runner (:mod:`pipeline.runner`), the Airflow DAG (``dags/lstm_training.py``) and the
Kubeflow pipeline (``components/``) call the same entry points, in this order; a test checks
that the DAG and the Kubeflow components import exactly these functions
(``tests/components/test_stage_drift.py``).

=========  ====================================  =======================  ===================
stage      entry point                           consumes                 produces (folder)
=========  ====================================  =======================  ===================
validate   pipeline.data.validation.run_validation    raw data                 ``validation/``
features   pipeline.features.windowing.run_features        validate.data            ``features/``
train      pipeline.training.lstm.run_training        features.features        ``training/``
baselines  pipeline.training.baselines.run_baselines      features.features        ``baselines/``
compare    pipeline.evaluation.comparison.run_comparison    features, train,         ``evaluation/``
                                                 baselines
register   pipeline.registry.registration.track_and_register  validate, features,      MLflow run, model
                                                 train, compare           version, aliases
=========  ====================================  =======================  ===================

Every entry point has the shape ``fn(cfg, run_path, *inputs, **options) -> dict`` where each
input is one value of an earlier stage's returned dict (a folder or file path; the validate
result whole for registration). No stage reads another step's folder by name: file names come
from :data:`pipeline.core.artifacts.CATALOG`, folders are inputs, so a shared run folder (CLI,
Airflow) and one folder per artifact (Kubeflow) run the same code. This module imports nothing heavy
(the Airflow scheduler may import it while parsing a DAG file): entry points are resolved on
first call.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Stage:
    """One training stage.

    Attributes:
        name: short name (``validate``, ``features``, ...), also the key of its result.
        entry: ``"module:function"`` of the entry point in ``pipeline/``.
        consumes: ``(stage, key)`` per positional input after ``cfg, run_path``: the value
            ``results[stage][key]`` (a path), or the whole result dict when ``key`` is None.
        produces: the folder it writes under the run folder (``pipeline.core.artifacts`` step
            name), or ``None`` for the registry stage, which writes to MLflow.
    """

    name: str
    entry: str
    consumes: tuple[tuple[str, str | None], ...]
    produces: str | None

    @property
    def module(self) -> str:
        return self.entry.split(":")[0]

    @property
    def function_name(self) -> str:
        return self.entry.split(":")[1]

    def load(self) -> Callable[..., dict[str, Any]]:
        """Import and return the entry point (imports the stage's heavy libraries)."""
        return getattr(importlib.import_module(self.module), self.function_name)

    def inputs(self, results: dict[str, dict[str, Any]]) -> list[Any]:
        """The positional inputs taken from earlier results (paths as :class:`Path`)."""
        values = []
        for stage, key in self.consumes:
            value = results[stage] if key is None else results[stage][key]
            values.append(value if key is None else Path(value))
        return values


STAGES: tuple[Stage, ...] = (
    Stage("validate", "pipeline.data.validation:run_validation", (), "validation"),
    Stage("features", "pipeline.features.windowing:run_features", (("validate", "data"),), "features"),
    Stage("train", "pipeline.training.lstm:run_training", (("features", "features"),), "training"),
    Stage("baselines", "pipeline.training.baselines:run_baselines", (("features", "features"),), "baselines"),
    Stage(
        "compare", "pipeline.evaluation.comparison:run_comparison",
        (("features", "features"), ("train", "training"), ("baselines", "baselines")), "evaluation",
    ),  # fmt: skip
    Stage(
        "register", "pipeline.registry.registration:track_and_register",
        (("validate", None), ("features", "features"), ("train", "training"), ("compare", "evaluation")), None,
    ),  # fmt: skip
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    """The stage called ``name``.

    Raises:
        KeyError: no such stage; the message lists the known names.
    """
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; expected one of {[s.name for s in STAGES]}") from None


def run_stage(name: str, cfg: Any, run_path: str | Path, results: dict[str, dict[str, Any]], **options: Any) -> dict[str, Any]:
    """Run stage ``name`` with its inputs taken from ``results``: how the CLI runner, the Airflow
    DAG and the benchmarks call a stage (the Kubeflow components call the entry points on their
    own artifact folders).

    Args:
        cfg: the run's :class:`pipeline.core.config.PipelineConfig`.
        run_path: the run folder the stage writes its step into.
        results: earlier stages' returned dicts by stage name (only those it consumes are read;
            in Airflow, the upstream tasks' XComs).
        options: keyword options of the entry point (``as_of``, ``data_path``, ``tags``, ...).

    Raises:
        KeyError: an input stage is missing from ``results`` (the message names it).
        PipelineError: from the stage, with ``stage`` set to ``name``.
    """
    from pipeline.core.errors import PipelineError

    s = stage(name)
    missing = sorted(upstream(name) - set(results))
    if missing:
        raise KeyError(f"stage {name!r} needs the results of {missing}; given {sorted(results)}")
    try:
        return s.load()(cfg, Path(run_path), *s.inputs(results), **options)
    except PipelineError as err:
        err.stage = err.stage or name
        raise


def upstream(name: str) -> set[str]:
    """The stages ``name`` depends on directly (its edges in the DAG and the KFP pipeline)."""
    return {s for s, _ in stage(name).consumes}


def entry_points() -> set[tuple[str, str]]:
    """``{(module, function)}`` of every stage: what an orchestrator must call, no more, no less."""
    return {(s.module, s.function_name) for s in STAGES}


# --- for orchestrators that pass each step its own folder (Kubeflow) -------------------------


@contextmanager
def scratch_run(prefix: str = "lstm-run-") -> Iterator[Path]:
    """A temporary run folder for one stage; removed afterwards (outputs are moved out first)."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root / "run"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def publish(step_folder: str | Path, artifact_path: str | Path) -> Path:
    """Move a stage's output folder to an orchestrator's artifact path (replacing it).

    Args:
        step_folder: the folder a stage wrote (e.g. ``<scratch>/run/training``).
        artifact_path: where the orchestrator expects the artifact (KFP's ``Output[...].path``).
    """
    src, dst = Path(step_folder), Path(artifact_path)
    if dst.exists():
        shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))
    return dst


def component_config(config: str, mlflow_tracking_uri: str = "", store_url: str = "", data_path: str = ""):
    """The config a KFP component runs with: its pipeline's non-empty ``mlflow_tracking_uri`` and
    ``store_url`` parameters override the YAML and also the pod's environment (``MLFLOW_TRACKING_URI``,
    ``LSTM_PIPELINE_STORE_URL``, which otherwise win over the config): the parameters are what the
    run was started with. A non-empty ``data_path`` replaces ``data.path`` (as the Airflow DAGs'
    param does). Empty parameters keep the config's values and the environment.

    Returns:
        :class:`pipeline.core.config.PipelineConfig`.

    Raises:
        ConfigError: as :func:`pipeline.core.config.load_config`.
    """
    import os

    from pipeline.core.config import load_config
    from pipeline.store.sql import STORE_URL_ENV

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    if store_url:
        os.environ[STORE_URL_ENV] = store_url
    overrides = {k: v for k, v in {"mlflow.tracking_uri": mlflow_tracking_uri, "monitoring.store_url": store_url, "data.path": data_path}.items() if v}
    return load_config(config, overrides or None)
