"""Model logging and version registration: resumable step by step, each step idempotent.

:func:`track_and_register` is the stage entry point. Its inputs are explicit: the validate
stage's result and the features, training and evaluation folders (:class:`pipeline.registry.tracking.RunInputs`);
its own folder (``run_path``) only names the MLflow run and holds the run binding
(``artifacts.RUN_MANIFEST``). After the run is logged
(:mod:`pipeline.registry.tracking`), a run whose comparison gate passed is registered in four steps;
a rerun after a crash at any point finishes what is missing and repeats nothing:

1. the registered model exists (created if MLflow says ``RESOURCE_DOES_NOT_EXIST``);
2. one model version per MLflow run (found by ``run_id``; else the pyfunc model is logged
   and the version created);
3. the version's tags and description are (re)written from the latest gate verdict;
4. under the registered model's lock (:func:`pipeline.registry.aliases.registry_lock`):
   ``challenger`` moves to the version unless a newer version holds it, and ``champion``
   is set when the model has none, a decision read inside the lock.

Each pipeline run registers its own version, even when an earlier version was trained from
the same inputs (equal :data:`SAME_INPUTS_TAGS`: config and data fingerprint, code, as-of);
the result names those versions (``same_inputs_as``) and ``train`` prints them. Reusing the
earlier version instead would be wrong twice over: the fingerprint leaves out the
machine-local keys (``training.device``, ``training.num_threads``), which change the weights,
so equal inputs do not prove an equal model; and step 2's "one version per run, found by
``run_id``" is what makes a crashed registration resumable. Aliases never move because of
it: the new version gets ``challenger``/``champion`` by the rules of step 4 only.

A run whose gate failed registers nothing; if an earlier gate passed the same run and
registered it, the version's tags are rewritten to the new verdict, ``challenger`` leaves
it, and a version that is ``champion`` makes the stage fail (roll back explicitly).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core import artifacts, faults, runs
from pipeline.core.config import PipelineConfig
from pipeline.core.errors import RegistryError
from pipeline.evaluation.comparison import GateDecision
from pipeline.evaluation.cusum import REFERENCE_TAG
from pipeline.registry import aliases, journal, server, tracking

log = logging.getLogger(__name__)



def _input_example(cfg: PipelineConfig, validated_data: Path, prep) -> pd.DataFrame:
    """One forecast's history (``prep.history_steps`` rows) from the validated data, typed like a user's frame.

    The last series' latest window the model can forecast from (its inputs usable after filling
    gaps of at most ``data.max_gap``, :func:`pipeline.features.windowing.transform`): data whose last
    days hold a longer gap still registers, with an example from before it. Without any usable
    window, the last rows (the model's own check then names the gap).
    """
    from pipeline.core import schema
    from pipeline.data.io import long_to_raw
    from pipeline.features.windowing import transform

    long = pd.read_parquet(validated_data)
    rows = prep.history_steps
    series = long[long[schema.UNIQUE_ID] == long[schema.UNIQUE_ID].iloc[-1]].reset_index(drop=True)
    for part in (series.tail(50 * rows).reset_index(drop=True), series):  # the recent tail first: cheap on long histories
        starts = transform(part, prep).starts["forecast"]
        starts = starts[starts + prep.lookback >= rows]  # the seasonal lags' reach lies inside the part
        if len(starts):
            end = int(starts[-1]) + prep.lookback
            return long_to_raw(part.iloc[end - rows : end], cfg.data)
    return long_to_raw(long.tail(rows), cfg.data)


def model_artifacts(features_dir: Path, training_dir: Path) -> dict[str, str]:
    """The files the pyfunc model ships, by the name ``load_context`` reads them under.

    ``reference`` (drift) and ``intervals`` (the conformal calibration) only when the stages wrote them.
    """
    reference = artifacts.DRIFT_REFERENCE.at(features_dir)  # drift reference for monitoring
    intervals = artifacts.INTERVALS.at(training_dir)  # prediction intervals' calibration
    return {
        "preprocessing": str(artifacts.PREPROCESSING.at(features_dir)),
        "weights": str(artifacts.MODEL_WEIGHTS.at(training_dir)),
        **({"reference": str(reference)} if reference.exists() else {}),
        **({"intervals": str(intervals)} if intervals.exists() else {}),
    }


def _inference_package(folder: Path) -> Path:
    """``<folder>/pipeline/`` holding only :data:`pipeline.serving.pyfunc.INFERENCE_FILES`: what a logged model ships."""
    import shutil

    from pipeline.serving.pyfunc import INFERENCE_FILES

    package = Path(folder) / "pipeline"
    for name in INFERENCE_FILES:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tracking.PACKAGE_ROOT / name, package / name)
    return package


class _DropMessage(logging.Filter):
    """Drops the log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextmanager
def _filtered(logger: logging.Logger, flt: logging.Filter) -> Iterator[None]:
    logger.addFilter(flt)
    try:
        yield
    finally:
        logger.removeFilter(flt)


def _log_model(mlflow, cfg: PipelineConfig, inputs: tracking.RunInputs):
    import tempfile

    from mlflow.models import infer_signature

    from pipeline.features.windowing import load_preprocessor
    from pipeline.models.conformal import IntervalCalibration
    from pipeline.models.lstm import LSTMForecaster
    from pipeline.serving.pyfunc import SIGNATURE_PARAMS, ForecastModel

    prep = load_preprocessor(inputs.features)
    example = _input_example(cfg, inputs.validated_data, prep)
    model = ForecastModel()
    intervals = artifacts.INTERVALS.at(inputs.training)
    model.use(LSTMForecaster.load(artifacts.MODEL_WEIGHTS.at(inputs.training), prep), None,
              IntervalCalibration.load(intervals) if intervals.exists() else None)  # the signature's outputs name the interval columns
    # MLflow's hints that do not apply here, printed on every registration: integer columns in the inferred schema
    # (a warning; the signature's inputs are made optional and untyped below, the model casts), and cloudpickle for a
    # Python object (a log line; ForecastModel is a stateless class shipped with its code in code_paths, its weights
    # are artifacts)
    pickle_hint = _DropMessage("Passing a Python object as `python_model`")
    with warnings.catch_warnings(), _filtered(logging.getLogger("mlflow.pyfunc"), pickle_hint):
        warnings.filterwarnings("ignore", message=r"Hint: Inferred schema contains integer column", category=UserWarning)
        typed = infer_signature(example, model.predict(None, example), params=SIGNATURE_PARAMS)  # also proves the example is usable
        signature = _optional_inputs(typed)
        with tempfile.TemporaryDirectory() as tmp:
            return mlflow.pyfunc.log_model(
                name="model",
                python_model=ForecastModel(),
                artifacts=model_artifacts(inputs.features, inputs.training),
                code_paths=[str(_inference_package(tmp))],
                signature=signature,
                input_example=example,
                metadata={"input_types": input_types(typed), "input_casts": "numbers -> float64, timestamp -> datetime, categorical -> text"},
                pip_requirements=[f"torch>={_version('torch')}", f"pandas>={_version('pandas')}", f"scikit-learn>={_version('sklearn')}", "pydantic>=2", "pyyaml"],
            )


def _optional_inputs(signature):
    """The signature with every input column optional and of type ``any``: the model checks and casts them.

    MLflow enforces required input columns before ``predict`` runs and answers with a long
    schema error; the pipeline's :func:`pipeline.serving.pyfunc.history_to_long` names the column
    and lists what it expects instead. MLflow's type check also refuses frames that
    ``pd.read_csv`` makes every day (an ``int64`` column against a ``double`` one: "Can not
    safely convert int64 to float64"; a timestamp parsed with ``parse_dates``), so each column
    is declared ``any`` and the model casts it (numbers to float64, timestamps with the
    config's format, categorical codes to text). The column names stay in the signature; the
    types the example had are in the model's metadata (:func:`input_types`).
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema([ColSpec(AnyType(), c.name, required=False) for c in signature.inputs.inputs])
    return ModelSignature(inputs=inputs, outputs=signature.outputs, params=signature.params)


def input_types(signature) -> dict[str, str]:
    """``{column: MLflow type}`` of the inferred (typed) signature's inputs: what each column holds."""
    return {c.name: str(c.type) for c in signature.inputs.inputs}


def _version(module: str) -> str:
    import importlib

    return importlib.import_module(module).__version__.split("+")[0]


def version_tags(info: dict, validated: dict, run_id: str) -> dict[str, str]:
    """A version's tags from the latest gate verdict (``gate.json``) and training metrics."""
    gate, training = info["gate"], info["training"]
    return {
        "lstm_rmse": f"{gate['lstm_rmse']:.6g}", "training_rmse": f"{training['training_rmse']:.6g}",
        "best_baseline": gate["best_baseline"], "best_baseline_rmse": f"{gate['best_baseline_rmse']:.6g}",
        "gate": "passed" if gate["passed"] else "failed", "gate_reasons": "; ".join(gate.get("reasons", []))[:5000],
        "data_sha256": validated.get("data_sha256") or "synthetic", "mlflow_run_id": run_id,
        **({"as_of": validated["as_of"]} if validated.get("as_of") else {}),
    }  # fmt: skip


#: version tags of ``monitoring.inherit_training_rmse``: the training RMSE the rule holds the version to, and whose it is
INHERITED_TAG, INHERITED_FROM_TAG = "inherited_training_rmse", "inherited_from"


def inherited_tags(own_training_rmse: float, run_tags: dict[str, str], champion: tuple[int, dict[str, str]] | None) -> dict[str, str]:
    """The ``inherited_training_rmse`` / ``inherited_from`` tags of a new version (``monitoring.inherit_training_rmse``).

    A version trained by a retrain that monitoring triggered (its run has a ``trigger.check_id``
    tag: the ``lstm_training`` DAG run with a ``check_id`` in its conf, or a replay's retrain)
    inherits the standard of the champion at registration, the one the fault made fail: that
    champion's ``inherited_training_rmse`` when it has one, else its ``training_rmse``, when
    that is lower than the version's own in-sample training RMSE. Otherwise ``{}`` (the
    version's own ``training_rmse`` is its standard; a scheduled training resets the line).

    Args:
        own_training_rmse: the new version's training RMSE (target units).
        run_tags: the training run's MLflow tags.
        champion: ``(version, tags)`` of the champion at registration, or ``None``.
    """
    if "trigger.check_id" not in run_tags or champion is None:
        return {}
    version, tags = champion
    try:
        standard = float(tags.get(INHERITED_TAG) or tags["training_rmse"])
    except (KeyError, ValueError):
        return {}
    if not standard < own_training_rmse:
        return {}
    origin = tags.get(INHERITED_FROM_TAG) or f"v{version}"
    return {INHERITED_TAG: f"{standard:.6g}", INHERITED_FROM_TAG: origin}


def reference_tags(cfg: PipelineConfig, inputs: tracking.RunInputs) -> dict[str, str]:
    """``monitoring.reference`` (and ``monitoring.reference_reason``) version tags: the reference forecast
    the ``naive``, ``both`` and ``cusum`` rules compare this version with, ``monitoring.naive_model``
    resolved against the version's own test RMSEs (:func:`pipeline.evaluation.cusum.choose_reference`)."""
    from pipeline.evaluation.cusum import choose_reference

    path = artifacts.COMPARISON.at(inputs.evaluation)
    metrics = artifacts.read_json(path).get("metrics", {}) if path.exists() else {}
    reference, reason = choose_reference(cfg.monitoring.naive_model, {k: m.get("rmse", float("nan")) for k, m in metrics.items()})
    return {REFERENCE_TAG: reference, REFERENCE_TAG + "_reason": reason[:5000]}


def detector_tags(cfg: PipelineConfig, inputs: tracking.RunInputs, reference: str) -> dict[str, str]:
    """``cusum.*`` version tags: the version's own CUSUM detector (``monitoring.rule: cusum`` only, else ``{}``).

    Calibrated on the version's test forecasts against ``reference``, its reference forecast (:func:`reference_tags`)
    (:func:`pipeline.evaluation.cusum.calibrate_from_run`), deterministic under ``run.seed``. A
    calibration that cannot be done (too few or constant differentials) does not stop the
    registration: the version gets ``cusum.error`` with the reason, and a check that needs the
    detector says so (``MonitoringError``). With ``monitoring.cusum_fast_shift`` the fast limb is
    calibrated too (``cusum.fast.*``, each limb at 2 x arl0); a fast limb that cannot be
    calibrated leaves the slow one alone (at 1 x arl0), with ``cusum.fast_error`` saying why.
    """
    mc = cfg.monitoring
    if mc.rule != "cusum":
        return {}
    from pipeline.core.errors import DataQualityError
    from pipeline.core.seasons import season_length
    from pipeline.evaluation.cusum import FAST_ERROR_TAG, FAST_PREFIX, TAG_PREFIX, calibrate_from_run

    def calibrated(shift: float, clip: float | None, limbs: int):
        return calibrate_from_run(inputs.features, inputs.training, reference, season_length(cfg), mc.window, mc.arl0, cfg.data.freq,
                                  shift=shift, seed=cfg.run.seed, clip=clip, guarantee=mc.cusum_guarantee, limbs=limbs)  # fmt: skip

    # the fast limb first: when it cannot be calibrated (degenerate on this version's differentials), the slow limb runs alone and
    # is calibrated to the whole arl0, not to the 2 x arl0 of a pair
    fast, fast_error = None, {}
    if mc.cusum_fast_shift is not None:
        try:
            fast = calibrated(mc.cusum_fast_shift, mc.cusum_fast_clip, 2)
        except DataQualityError as exc:
            log.info("no fast CUSUM limb for this version (the slow limb runs alone, at the whole arl0): %s", exc)
            fast_error = {FAST_ERROR_TAG: str(exc)[:5000]}
    try:
        detector = calibrated(mc.cusum_shift, mc.cusum_clip, 1 if fast is None else 2)
    except DataQualityError as exc:
        log.warning("no CUSUM detector for this version: %s", exc)
        return {TAG_PREFIX + "error": str(exc)[:5000]}
    for what, d in (("CUSUM detector", detector), ("its fast limb", fast)):
        if d is not None:
            log.info("%s: k %.3g, h %.4g for ARL0 %s (%.0f origins, shared by %d limb(s)), on %d %s differentials", what, d.k, d.h, d.arl0,
                     d.arl0_origins, d.limbs, d.n, d.sample)  # fmt: skip
    return {**detector.to_tags(), **(fast.to_tags(FAST_PREFIX) if fast is not None else {}), **fast_error}


#: version tags that name a version's inputs; two versions with equal values were trained from identical inputs
SAME_INPUTS_TAGS = ("pipeline_fingerprint", "code_sha256", "as_of")


def input_tags(cfg: PipelineConfig, validated: dict) -> dict[str, str]:
    """The version tags of :data:`SAME_INPUTS_TAGS`: config and data fingerprint, code, as-of (``""`` when none)."""
    return {
        "pipeline_fingerprint": runs.run_fingerprint(cfg, validated.get("data_sha256")),
        "code_sha256": tracking.code_sha256(), "as_of": str(validated.get("as_of") or ""),
    }  # fmt: skip


def same_inputs_versions(client, name: str, version: int, tags: dict[str, str]) -> list[int]:
    """The other versions of ``name`` trained from the same inputs as ``version`` (equal :data:`SAME_INPUTS_TAGS`), sorted.

    Versions registered before these tags existed never match.
    """
    key = {k: tags[k] for k in SAME_INPUTS_TAGS}
    found = client.search_model_versions(f"name='{name}'")
    return sorted(int(v.version) for v in found if int(v.version) != version and {k: v.tags.get(k, "" if k == "as_of" else None) for k in key} == key)


def _run_version(client, name: str, run_id: str) -> int | None:
    """Step 2's lookup: the version made from ``run_id``, if any (the lowest, if a crash made two)."""
    found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return min(int(v.version) for v in found) if found else None


def _create_version(mlflow, client, cfg: PipelineConfig, inputs: tracking.RunInputs, run_id: str, tags: dict, info: dict) -> int:
    model_info = _log_model(mlflow, cfg, inputs)
    faults.point("after_log_model")
    name = cfg.mlflow.registered_model_name
    version = client.create_model_version(name, source=model_info.model_uri, run_id=run_id, tags=tags, description=tracking.describe(info), model_id=model_info.model_id)
    faults.point("after_version_created")
    return int(version.version)


def _write_tags(client, name: str, version: int, tags: dict[str, str], description: str) -> None:
    """Step 3: make the version's tags and description equal to ``tags`` / ``description``."""
    current = client.get_model_version(name, str(version))
    for key, value in tags.items():
        if current.tags.get(key) != value:
            client.set_model_version_tag(name, str(version), key, value)
    if current.description != description:
        client.update_model_version(name, str(version), description=description)


def event_recorder(store, name: str, when) -> Callable[..., None]:
    """``record(alias, from_version, to_version, reason, evidence)`` for :func:`assign_aliases`: one ``register`` row in
    the forecast store's alias events, written only when the store has no row moving ``alias`` to that version yet (a
    rerun that finds the alias in place writes the row its first attempt lost, and never a second one)."""

    def record(alias: str, old: int | None, new: int, reason: str, evidence: dict) -> None:
        if any(e["alias"] == alias and e["to_version"] == new for e in store.alias_events(name, 200)):
            return
        store.record_alias_event(name, alias, old, new, "register", reason, evidence, when)

    return record


def assign_aliases(client, uri: str, name: str, version: int, gate: dict, record: Callable[..., Any] | None = None,
                   store_url: str | None = None) -> list[str]:  # fmt: skip
    """Step 4: ``challenger`` unless a newer version holds it; ``champion`` when there is none.

    Both decisions are read inside :func:`pipeline.registry.aliases.registry_lock`, so two runs
    registering at once cannot both make their version the first ``champion``. Each move is
    passed to ``record(alias, from_version, to_version, reason, evidence)`` right after it
    (the forecast store's alias-event row, as the canary's moves are); a rerun that finds an
    alias this registration set already in place moves nothing and passes it to ``record`` again
    (:func:`event_recorder` writes it only when its row is missing: a store that failed after
    the move, or a crash between the two). A version that held ``challenger``
    and lost it (its ``alias.challenger.removed`` tag: promoted, rejected, replaced, rolled back
    later) never gets it back from a rerun of its registration: the canary has dealt with it.

    Returns:
        The version's aliases afterwards, sorted.
    """
    evidence = {k: gate.get(k) for k in ("lstm_rmse", "best_baseline", "best_baseline_rmse", "relative_improvement", "min_relative_improvement")}
    with aliases.registry_lock(uri, name, store_url=store_url):
        journal.recover(client, uri, name, store_url)  # a canary move that died half way is undone before this one reads the aliases
        challenger = aliases.alias_version(client, name, aliases.CHALLENGER)
        done = client.get_model_version(name, str(version)).tags.get(f"alias.{aliases.CHALLENGER}.removed")
        if done is not None and challenger != version:
            log.info("%s v%s does not become challenger again: it left the canary (%s)", name, version, done)
        elif challenger is None or challenger < version:
            aliases.set_alias(client, name, aliases.CHALLENGER, version, "passed the comparison gate", evidence)
            if record is not None:
                record(aliases.CHALLENGER, challenger, version, "passed the comparison gate", evidence)
        elif challenger > version:
            log.info("%s v%s stays challenger: it is newer than v%s", name, challenger, version)
        elif record is not None:  # in place: this registration set it (only registration sets challenger)
            record(aliases.CHALLENGER, None, version, "passed the comparison gate", evidence)
        faults.point("between_alias_moves")
        first = "first version of the model to pass the comparison gate"
        champion = aliases.alias_version(client, name, aliases.CHAMPION)
        if champion is None:
            faults.point("before_first_champion")
            aliases.set_alias(client, name, aliases.CHAMPION, version, first, evidence)
            if record is not None:
                record(aliases.CHAMPION, None, version, first, evidence)
        elif champion == version and record is not None and client.get_model_version(name, str(version)).tags.get(f"alias.{aliases.CHAMPION}.reason") == first:
            record(aliases.CHAMPION, None, version, first, evidence)
        return aliases.version_aliases(client, name, version)


def _inherited(client, name: str, version: int | None, run_id: str, own: float) -> dict[str, str]:
    """:func:`inherited_tags` against the champion now; a rerun keeps what the first attempt wrote (the champion may have moved since)."""
    if version is not None:
        done = dict(aliases.mlflow_call(f"read {name} v{version}", client.get_model_version, name, str(version)).tags)
        if INHERITED_TAG in done or "training_rmse" in done:
            return {k: done[k] for k in (INHERITED_TAG, INHERITED_FROM_TAG) if k in done}
    run_tags = dict(aliases.mlflow_call(f"read run {run_id}", client.get_run, run_id).data.tags)
    champion = aliases.alias_version(client, name, aliases.CHAMPION)
    if champion is None or champion == version:
        return {}
    tags = dict(aliases.mlflow_call(f"read {name} v{champion}", client.get_model_version, name, str(champion)).tags)
    return inherited_tags(own, run_tags, (champion, tags))


def register(
    mlflow, client, cfg: PipelineConfig, uri: str, inputs: tracking.RunInputs, run_id: str, info: dict, validated: dict, gate: GateDecision,
) -> dict[str, Any]:  # fmt: skip
    """Steps 1-4 for a run whose gate passed; each step is skipped when already done.

    Returns:
        ``{"registered_model", "registered_version", "aliases", "same_inputs_as"}``; the last
        lists the other versions trained from the same inputs (:func:`same_inputs_versions`).

    Raises:
        GateFailedError: ``gate`` did not pass (the one check every orchestrator's path goes
            through: the Airflow skip and the KFP ``dsl.If`` only avoid calling this).
    """
    gate.raise_if_failed()
    name = cfg.mlflow.registered_model_name
    reference = reference_tags(cfg, inputs)
    tags = {**version_tags(info, validated, run_id), **input_tags(cfg, validated), **reference,
            **detector_tags(cfg, inputs, reference[REFERENCE_TAG])}  # fmt: skip
    aliases.ensure_registered_model(client, name, "LSTM forecaster registered by lstm-forecast-pipeline")
    version = _run_version(client, name, run_id)
    if cfg.monitoring.inherit_training_rmse:
        tags.update(_inherited(client, name, version, run_id, float(info["training"]["training_rmse"])))
    if version is None:
        version = _create_version(mlflow, client, cfg, inputs, run_id, tags, info)
    else:
        log.info("run %s is already registered as %s v%s; finishing its registration", run_id, name, version)
    _write_tags(client, name, version, tags, tracking.describe(info))
    from pipeline.store.sql import store_for

    store = store_for(cfg)
    # the event's time: the run's as-of (a retrain, a replay), else when the move happened (UTC), as an operator's move
    when = validated.get("as_of") or pd.Timestamp.now(tz="UTC").tz_localize(None).floor("s")

    found = assign_aliases(client, uri, name, version, info["gate"], event_recorder(store, name, when), store_url=store.url)
    same = same_inputs_versions(client, name, version, tags)
    if same:
        log.info("%s v%s was trained from the same inputs as v%s (config, data, code, as-of)", name, version, ", v".join(map(str, same)))
    return {"registered_model": name, "registered_version": version, "aliases": found, "same_inputs_as": same}


def _withdraw(client, cfg: PipelineConfig, uri: str, run_id: str, info: dict, validated: dict) -> None:
    """The gate now fails a run that an earlier verdict registered: tags follow the new verdict.

    Raises:
        RegistryError: the version is ``champion``; it is left serving, for a person to roll back.
    """
    name = cfg.mlflow.registered_model_name
    version = _run_version(client, name, run_id)
    if version is None:
        return
    _write_tags(client, name, version, {**version_tags(info, validated, run_id), **input_tags(cfg, validated)}, tracking.describe(info))
    reason = f"the latest comparison gate failed this version: {'; '.join(info['gate']['reasons'][:1])}"
    from pipeline.store.sql import store_url

    with aliases.registry_lock(uri, name, store_url=store_url(cfg)):
        journal.recover(client, uri, name, store_url(cfg))
        if aliases.alias_version(client, name, aliases.CHALLENGER) == version:
            aliases.delete_alias(client, name, aliases.CHALLENGER, reason)
        if aliases.alias_version(client, name, aliases.CHAMPION) == version:
            raise RegistryError(
                f"{name} v{version} is champion, but the latest gate verdict for its run fails it ({reason}); its tags now say "
                "gate=failed. It keeps serving until someone moves 'champion' back (e.g. to 'previous_champion')."
            )


def track_and_register(
    cfg: PipelineConfig, run_path: Path, validated: dict[str, Any], features_dir: Path, training_dir: Path, evaluation_dir: Path,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Stage entry point: log the run to MLflow and register the model if the gate passed.

    Args:
        run_path: the pipeline run's folder; its name is the MLflow run key (a rerun with the
            same name resumes that MLflow run) and it holds ``artifacts.RUN_MANIFEST``.
        validated: the validate stage's result (``report``, ``data``, ``data_sha256``, ``as_of``;
            :func:`pipeline.data.validation.validated_from_folder` rebuilds it from a folder).
        features_dir, training_dir, evaluation_dir: the folders the features, train and compare
            stages returned.
        tags: extra MLflow run tags (orchestrator ids).

    Returns:
        ``{"mlflow_run_id", "mlflow_experiment_id", "registered_model", "registered_version",
        "aliases", "same_inputs_as"}`` or, when the gate failed, ``{"mlflow_run_id", "mlflow_experiment_id",
        "registration": "skipped: <reason>"}``.

    Raises:
        RegistryError: the tracking server is unreachable (checked before anything is logged),
            the run id belongs to another config or data, or MLflow failed; a rerun resumes.
        ConfigError: ``run_path`` was made with another config or other data, or an input is
            missing (``validated`` without ``report``/``data``, a folder that does not exist).
    """
    import mlflow

    run_path = Path(run_path)
    inputs = tracking.RunInputs.of(validated, features_dir, training_dir, evaluation_dir)
    uri = server.tracking_uri(cfg)
    server.check_server(uri)
    fingerprint = runs.bind_run_folder(cfg, run_path, validated.get("data_sha256"))
    mlflow.set_tracking_uri(uri)
    try:
        with server.bounded_http_retries():
            return _track_and_register(mlflow, cfg, uri, run_path, inputs, validated, tags or {}, fingerprint)
    except mlflow.exceptions.MlflowException as exc:
        server.check_server(uri, attempts=1)  # a server gone mid-way gets its own message: "cannot reach MLflow at URL"
        raise RegistryError(f"MLflow at {uri} failed a request: {exc}. Rerun the same run id to resume: finished steps are kept.") from exc


def _experiment_id(mlflow, client, cfg, uri: str) -> str:
    """The config's experiment, created when missing; another process creating it at the same
    moment (RESOURCE_ALREADY_EXISTS) is not an error: its experiment is used."""
    name = cfg.mlflow.experiment_name
    exp = client.get_experiment_by_name(name)
    if exp:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=server.artifact_location(cfg, uri))
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS" or (exp := client.get_experiment_by_name(name)) is None:
            raise
        return exp.experiment_id


def _track_and_register(mlflow, cfg, uri: str, run_path: Path, inputs: tracking.RunInputs, validated: dict, tags: dict, fingerprint: str) -> dict[str, Any]:
    client = server.client(uri)
    exp_id = _experiment_id(mlflow, client, cfg, uri)
    with tracking.find_or_start_run(mlflow, client, exp_id, run_path.name, fingerprint) as run:
        info = tracking.log_run_contents(mlflow, cfg, inputs, validated, tags)
        result: dict[str, Any] = {"mlflow_run_id": run.info.run_id, "mlflow_experiment_id": exp_id}
        gate = GateDecision.from_dict(info["gate"])
        if not gate.passed:
            reason = "; ".join(gate.reasons[:1])
            mlflow.set_tag("registration", f"skipped: gate failed: {reason}")
            log.warning("not registering: the comparison gate failed: %s", reason)
            _withdraw(client, cfg, uri, run.info.run_id, info, validated)
            return {**result, "registration": f"skipped: gate failed: {reason}"}
        result.update(register(mlflow, client, cfg, uri, inputs, run.info.run_id, info, validated, gate))
        mlflow.set_tag("registration", f"{result['registered_model']} v{result['registered_version']}")
        return result
