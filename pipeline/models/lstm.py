"""The LSTM forecaster's inference: the fitted members, their ensemble forecast, save and load.

What a served model needs of the network and nothing of its training: ``LSTMForecaster``
holds the trained members (:class:`pipeline.models.network.RecurrentForecaster`) and their
:class:`pipeline.features.windowing.Preprocessor`; ``fit`` hands over to
:mod:`pipeline.training.lstm` (not shipped with a registered model: a served model only
predicts). ``WindowTensors`` gathers windows of a FeatureSet by start index, on the GPU when
the matrix fits there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline.core import artifacts
from pipeline.core.config import ModelConfig, PipelineConfig
from pipeline.core.errors import TrainingError
from pipeline.features.windowing import FeatureSet
from pipeline.models.network import RecurrentForecaster

#: windows per forward pass when forecasting (memory bound only; results do not depend on it)
EVAL_BATCH = 4096

#: share of free GPU memory the stacked matrix may take before it stays in host memory
DEVICE_RESIDENT_SHARE = 0.5


class WindowTensors:
    """The stacked matrix and window gathering by start index.

    On CUDA the matrix is moved to the GPU once when it takes at most
    ``DEVICE_RESIDENT_SHARE`` of the free memory, and windows are gathered there (no
    per-batch host-to-device copies); otherwise it stays in pinned host memory and each
    gathered batch is copied asynchronously. ``gather(starts)`` ->
    ``x (b, lookback, n_features)``, ``y (b, horizon)`` float32 on ``device``.
    """

    def __init__(self, fs: FeatureSet, device: torch.device):
        self.L, self.H, self.device = fs.prep.lookback, fs.prep.horizon, device
        # rows holding NaN are never gathered by a valid window; if one were, the loss
        # turns NaN and training stops with a TrainingError instead of learning from zeros
        values, target = torch.from_numpy(fs.values), torch.from_numpy(fs.target)  # (N, F), (N,)
        self.home = device if self._fits(device, values.nbytes + target.nbytes) else torch.device("cpu")
        if self.home.type == "cpu" and device.type == "cuda":
            values, target = values.pin_memory(), target.pin_memory()
        self.values, self.target = values.to(self.home), target.to(self.home)
        self.in_offsets = torch.arange(self.L, device=self.home)
        self.out_offsets = torch.arange(self.L, self.L + self.H, device=self.home)

    @staticmethod
    def _fits(device: torch.device, nbytes: int) -> bool:
        if device.type != "cuda":
            return True
        free, _ = torch.cuda.mem_get_info(device)
        return nbytes <= DEVICE_RESIDENT_SHARE * free

    def starts(self, fs: FeatureSet, split: str) -> torch.Tensor:
        return torch.from_numpy(fs.starts[split]).to(self.home)

    def gather(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.values[starts[:, None] + self.in_offsets]  # (b, L) rows -> (b, L, F)
        y = self.target[starts[:, None] + self.out_offsets]  # (b, H)
        if self.home != self.device:  # matrix too large for the GPU: copy this batch only
            return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return x, y


def build_model(n_features: int, horizon: int, mc: ModelConfig, lookback: int | None = None, seasonal_channels: int = 0) -> RecurrentForecaster:
    """The network ``mc`` describes; ``lookback`` is needed when ``mc.ar_highway`` is set; ``seasonal_channels``:
    ``len(prep.lag_steps)`` (:class:`pipeline.features.windowing.Preprocessor`)."""
    return RecurrentForecaster(
        n_features, horizon, mc.hidden_size, mc.num_layers, mc.dropout, mc.cell, mc.predict_delta, mc.relative_inputs,
        ar_highway=mc.ar_highway, lookback=lookback, seasonal_channels=seasonal_channels,
    )  # fmt: skip


class LSTMForecaster:
    """The pipeline's forecaster contract, for the recurrent network.

    Hyper-parameters (``cfg.model``, ``cfg.training``, ``cfg.run.seed``) are given to
    ``__init__``; ``fit(fs) -> self`` trains ``training.n_seeds`` members (seeds
    ``run.seed + k``) into ``work_dir`` (checkpoints; a rerun resumes). Forecasts are the
    members' mean in float32 (:meth:`_ensemble`, the one place), in the target's original units:

    * ``predict_windows(x)``: new history, ``x (n, lookback, n_features)`` float32 scaled
      (:func:`pipeline.features.windowing.design_matrix` rows) -> ``(n, horizon)`` float64;
    * ``predict(fs, split, index)``: the windows ``index`` of a split of a FeatureSet.

    Fitted state: ``models_`` (members, eval mode), ``results_``, ``prep_``, ``device_``,
    ``model_config_``. ``save(path)`` / ``LSTMForecaster.load(path, prep)`` round-trip it.
    """

    name = "LSTM"

    def __init__(self, cfg: PipelineConfig | None = None, work_dir: Path | None = None, device: str | None = None):
        self.cfg = cfg
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.device = device

    def fit(self, fs: FeatureSet, on_epoch_end: Callable[[int, dict], None] | None = None) -> LSTMForecaster:
        """Train ``training.n_seeds`` members on ``fs`` (:func:`pipeline.training.lstm.fit_members`).

        Raises:
            TrainingError: no config or work_dir (a loaded model can only predict), or from training.
        """
        if self.cfg is None or self.work_dir is None:
            raise TrainingError("LSTMForecaster.fit needs a config and a work_dir (a loaded model can only predict)")
        from pipeline.training.lstm import fit_members  # training code is not part of a served model

        self.models_, self.results_, self.device_ = fit_members(fs, self.cfg, self.work_dir, self.device, on_epoch_end)
        self.prep_, self.model_config_ = fs.prep, self.cfg.model
        return self

    @torch.no_grad()
    def _ensemble(self, x: torch.Tensor) -> torch.Tensor:
        """``x (b, lookback, F)`` float32 on ``device_`` -> members' mean ``(b, horizon)`` float32, scaled."""
        return torch.stack([m(x).float() for m in self.models_]).mean(dim=0)

    def predict_windows(self, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
        """``x (n, lookback, n_features)`` float32, scaled -> ``(n, horizon)`` float64, original units.

        Raises:
            ValueError: ``x`` is not ``(n, prep_.lookback, prep_.n_features)``.
        """
        x = np.asarray(x, dtype=np.float32)
        expected = (self.prep_.lookback, self.prep_.n_features)
        if x.ndim != 3 or x.shape[1:] != expected:
            raise ValueError(f"expected windows of shape (n, {expected[0]}, {expected[1]}), got {x.shape}")
        outs = [self._ensemble(torch.from_numpy(x[i : i + batch]).to(self.device_)).cpu().numpy() for i in range(0, len(x), batch)]
        scaled = np.concatenate(outs) if outs else np.empty((0, self.prep_.horizon), np.float32)
        return self.prep_.inverse_target(scaled)

    def predict(self, fs: FeatureSet, split: str = "test", index: np.ndarray | None = None, batch: int = EVAL_BATCH) -> np.ndarray:
        """``(n, horizon)`` float64 forecasts in original units for windows ``index`` of ``split`` (all by default)."""
        if getattr(self, "_tensors_for", None) is not fs:  # move the matrix once per FeatureSet
            self._tensors, self._tensors_for = WindowTensors(fs, self.device_), fs
        starts = self._tensors.starts(fs, split)
        if index is not None:
            starts = starts[torch.as_tensor(index, device=starts.device)]
        outs = [self._ensemble(self._tensors.gather(starts[i : i + batch])[0]).cpu().numpy() for i in range(0, len(starts), batch)]
        scaled = np.concatenate(outs) if outs else np.empty((0, fs.prep.horizon), np.float32)
        return self.prep_.inverse_target(scaled)

    def save(self, path: Path) -> Path:
        """Weights of every member plus the architecture, as ``torch.save`` of plain tensors."""
        payload = {
            "n_features": self.prep_.n_features,
            "horizon": self.prep_.horizon,
            "model": self.model_config_.model_dump(mode="json"),
            "members": [{k: v.cpu() for k, v in m.state_dict().items()} for m in self.models_],
        }
        tmp = Path(path).with_name(f".{Path(path).name}.tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)
        return Path(path)

    @classmethod
    def load(cls, path_or_folder: Path | str, prep, device: str = "cpu") -> LSTMForecaster:
        """A fitted forecaster from :meth:`save`'s file (or the folder holding ``model.pt``) and its
        :class:`pipeline.features.windowing.Preprocessor` (``weights_only`` load; no config needed).

        Raises:
            ValueError: the weights do not match ``prep`` (feature count or horizon).
        """
        path = Path(path_or_folder)
        path = artifacts.MODEL_WEIGHTS.at(path) if path.is_dir() else path
        payload = torch.load(path, map_location=device, weights_only=True)
        if (payload["n_features"], payload["horizon"]) != (prep.n_features, prep.horizon):
            raise ValueError(
                f"{path}: weights for {payload['n_features']} features and horizon {payload['horizon']}, "
                f"but the preprocessing has {prep.n_features} features and horizon {prep.horizon}"
            )
        mc = ModelConfig(**{"ar_highway": False, **payload["model"]})  # weights saved before the highway existed have none
        members = []
        for state in payload["members"]:
            model = build_model(payload["n_features"], payload["horizon"], mc, prep.lookback, len(prep.lag_steps))
            model.load_state_dict(state)
            members.append(model)
        return cls.from_members(members, prep, device, mc)

    @classmethod
    def from_members(cls, members: list[RecurrentForecaster], prep, device: str = "cpu", model_config: ModelConfig | None = None) -> LSTMForecaster:
        """A fitted forecaster around trained networks (e.g. built in a test) and their preprocessing."""
        self = cls(device=device)
        self.models_ = [m.to(device).eval() for m in members]
        self.prep_, self.device_, self.results_, self.model_config_ = prep, torch.device(device), [], model_config
        return self
