"""``retrain.mode: finetune``: a triggered retrain that starts from the champion (docs/LOOP.md 8.1).

The loop names the champion before the training stages run: :func:`start_from_champion` copies
the champion's fitted preprocessing (``preprocessing.json``) and weights (``model.pt``) out of
its registered model into ``<run>/finetune_start/``, beside ``start.json`` (model, version, run
id), and sets ``retrain.start_from`` to that folder. The features stage then applies that
preprocessing unchanged (:func:`pipeline.features.windowing.build_finetune_features`) and the
training stage starts every member from the champion's (:class:`pipeline.training.lstm.FinetuneStart`).
The version it registers is self-contained like any other: it ships its own copy of both.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.core import artifacts
from pipeline.core.config import PipelineConfig
from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)

#: config key -> the champion's :class:`pipeline.features.windowing.Preprocessor` field it must equal
PREPROCESSING_KEYS = {
    "data.timestamp_column": "timestamp_column", "data.target_column": "target_column", "data.series_id_column": "series_id_column",
    "data.freq": "freq", "data.covariates": "covariates", "features.lookback": "lookback", "features.horizon": "horizon",
    "features.target_transform": "target_transform", "features.scaler": "scaler_kind",
}  # fmt: skip
#: ``model.*`` keys that decide the weights' shapes and meaning
ARCHITECTURE_KEYS = ("cell", "hidden_size", "num_layers", "predict_delta", "relative_inputs", "ar_highway")


def _config_value(cfg: PipelineConfig, dotted: str) -> Any:
    section, key = dotted.split(".")
    value = getattr(getattr(cfg, section), key)
    return list(value) if isinstance(value, tuple | list) else value


def mismatches(cfg: PipelineConfig, prep, model_config) -> list[str]:
    """Where ``cfg`` disagrees with the champion a finetune would start from (empty: none).

    Args:
        prep: the champion's :class:`pipeline.features.windowing.Preprocessor`.
        model_config: the champion's :class:`pipeline.core.config.ModelConfig`.

    Returns:
        One ``"<key>: config <value>, champion <value>"`` per difference.
    """
    out = [f"{key}: config {_config_value(cfg, key)!r}, champion {getattr(prep, field)!r}"
           for key, field in PREPROCESSING_KEYS.items() if _config_value(cfg, key) != getattr(prep, field)]  # fmt: skip
    if sorted(cfg.data.categorical_covariates) != sorted(prep.categorical_levels):
        out.append(f"data.categorical_covariates: config {list(cfg.data.categorical_covariates)}, champion {list(prep.categorical_levels)}")
    out += [f"model.{key}: config {getattr(cfg.model, key)!r}, champion {getattr(model_config, key)!r}"
            for key in ARCHITECTURE_KEYS if getattr(cfg.model, key) != getattr(model_config, key)]  # fmt: skip
    return out


def _copy_champion(cfg: PipelineConfig, version: int, folder: Path) -> None:
    """Write the champion's preprocessing, weights and ``start.json`` into ``folder`` (atomically)."""
    from pipeline.loop.monitoring import load_version
    from pipeline.registry.aliases import mlflow_call
    from pipeline.registry.server import connect

    name = cfg.mlflow.registered_model_name
    client, _ = connect(cfg)
    run_id = mlflow_call(f"read {name} v{version}", client.get_model_version, name, str(version)).run_id
    forecaster = load_version(name, version).forecaster
    with artifacts.atomic_dir(folder) as tmp:
        artifacts.write_json(artifacts.PREPROCESSING.at(tmp), forecaster.prep_.to_dict())
        forecaster.save(artifacts.MODEL_WEIGHTS.at(tmp))
        artifacts.write_json(artifacts.FINETUNE_START.at(tmp), {"model": name, "version": int(version), "run_id": run_id})


def start_from_champion(cfg: PipelineConfig, run_path: Path, version: int | None) -> PipelineConfig:
    """``cfg`` with ``retrain.start_from`` naming a copy of champion ``version`` (``retrain.mode: finetune``).

    Any other mode returns ``cfg`` unchanged. The copy lives in ``<run_path>/finetune_start/``
    and is reused when the run is resumed (same version). Call it after
    :func:`pipeline.loop.monitoring.retrain_config`, before the training stages.

    Args:
        run_path: the training run's folder.
        version: the champion the triggering check scored (``check["champion_version"]``, the
            ``lstm_training`` conf's ``champion_version``).

    Raises:
        ConfigError: no champion version is given, or the config's data, features or model
            keys differ from the champion's (a finetune keeps the champion's preprocessing and
            architecture; use ``retrain.mode: refit`` to change them); the message lists each key.
        RegistryError: the registry cannot be read.
    """
    from pipeline.features.windowing import load_preprocessor
    from pipeline.models.lstm import LSTMForecaster

    if cfg.retrain.mode != "finetune":
        return cfg
    if version is None:
        raise ConfigError(
            f"retrain.mode finetune: expected the champion version to start from (the check's champion_version), "
            f"found none for model {cfg.mlflow.registered_model_name!r}"
        )
    folder = artifacts.step_dir(run_path, artifacts.FINETUNE)
    info = artifacts.FINETUNE_START.at(folder)
    if not info.exists() or artifacts.read_json(info).get("version") != int(version):
        _copy_champion(cfg, int(version), folder)
    prep = load_preprocessor(folder)
    wrong = mismatches(cfg, prep, LSTMForecaster.load(folder, prep).model_config_)
    if wrong:
        raise ConfigError(
            f"retrain.mode finetune from {cfg.mlflow.registered_model_name} v{version}: the config differs from the champion's "
            f"preprocessing or architecture, which a finetune keeps: {'; '.join(wrong)}. Use retrain.mode: refit to change them"
        )
    log.info("finetune starts from %s v%s (copied to %s)", cfg.mlflow.registered_model_name, version, folder)
    return cfg.model_copy(update={"retrain": cfg.retrain.model_copy(update={"start_from": folder.resolve()})})
