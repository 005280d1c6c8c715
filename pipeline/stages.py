"""The training stages, in order: one list for every orchestrator.

The CLI runner (:mod:`pipeline.runner`), the Airflow DAG (``dags/lstm_training.py``) and the
Kubeflow pipeline (``components/``) call the same entry points, in this order; a test checks
that the DAG and the Kubeflow components import exactly these functions
(``tests/components/test_stage_drift.py``).

=========  ====================================  =======================  ===================
stage      entry point                           consumes                 produces (folder)
=========  ====================================  =======================  ===================
validate   pipeline.validation.run_validation    raw data                 ``validation/``
features   pipeline.features.run_features        validate.data            ``features/``
train      pipeline.training.run_training        features.features        ``training/``
baselines  pipeline.baselines.run_baselines      features.features        ``baselines/``
compare    pipeline.evaluation.run_comparison    features, train,         ``evaluation/``
                                                 baselines
register   pipeline.registry.track_and_register  validate (and the run    MLflow run, model
                                                 folder's validation,     version, aliases
                                                 features, training,
                                                 evaluation by name)
=========  ====================================  =======================  ===================

Every entry point has the shape ``fn(cfg, run_path, *inputs, **options) -> dict`` where each
input is one value of an earlier stage's returned dict. This module imports nothing heavy
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
        produces: the folder it writes under the run folder (``pipeline.artifacts`` step
            name), or ``None`` for the registry stage, which writes to MLflow.
        reads_run_folder: the steps it reads from the run folder by name instead of taking
            them as inputs (only registration; see :func:`assemble_run_folder`).
    """

    name: str
    entry: str
    consumes: tuple[tuple[str, str | None], ...]
    produces: str | None
    reads_run_folder: tuple[str, ...] = ()

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
    Stage("validate", "pipeline.validation:run_validation", (), "validation"),
    Stage("features", "pipeline.features:run_features", (("validate", "data"),), "features"),
    Stage("train", "pipeline.training:run_training", (("features", "features"),), "training"),
    Stage("baselines", "pipeline.baselines:run_baselines", (("features", "features"),), "baselines"),
    Stage(
        "compare", "pipeline.evaluation:run_comparison",
        (("features", "features"), ("train", "training"), ("baselines", "baselines")), "evaluation",
    ),  # fmt: skip
    Stage(
        "register", "pipeline.registry:track_and_register", (("validate", None),), None,
        reads_run_folder=("validation", "features", "training", "evaluation"),
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


def publish(step_folder: str | Path, artifact_path: str | Path, drop: tuple[str, ...] = ()) -> Path:
    """Move a stage's output folder to an orchestrator's artifact path (replacing it).

    Args:
        step_folder: the folder a stage wrote (e.g. ``<scratch>/run/training``).
        artifact_path: where the orchestrator expects the artifact (KFP's ``Output[...].path``).
        drop: names inside the folder not to publish (e.g. ``checkpoints``).
    """
    src, dst = Path(step_folder), Path(artifact_path)
    for name in drop:
        shutil.rmtree(src / name, ignore_errors=True)
    if dst.exists():
        shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))
    return dst


def assemble_run_folder(run_path: str | Path, parts: dict[str, str | Path]) -> Path:
    """Lay out the run folder registration reads by name, from folders passed separately.

    ``track_and_register`` reads ``<run>/{validation,features,training,evaluation}/`` (and takes
    the MLflow run key from the folder's name); Kubeflow hands each step its inputs as separate
    artifact folders. This links each one into ``run_path`` under its step name.

    Args:
        run_path: the folder to create; its name becomes the MLflow run key (a rerun with the
            same name reuses the MLflow run and registers nothing twice).
        parts: step name -> folder; must cover ``stage("register").reads_run_folder``.

    Raises:
        ValueError: a step is missing from ``parts``, or a part is not a folder.
    """
    needed = stage("register").reads_run_folder
    missing = [step for step in needed if step not in parts]
    if missing:
        raise ValueError(f"registration needs the folders {list(needed)}; missing {missing}")
    run_path = Path(run_path)
    run_path.mkdir(parents=True, exist_ok=True)
    for step, folder in parts.items():
        if not Path(folder).is_dir():
            raise ValueError(f"{step}: expected a folder, found {folder!r}")
        link = run_path / step
        if link.is_symlink() or link.exists():
            link.unlink() if link.is_symlink() else shutil.rmtree(link)
        link.symlink_to(Path(folder).resolve(), target_is_directory=True)
    return run_path
