"""LSTM training: Adam, gradient clipping, ReduceLROnPlateau, early stopping, checkpoints.

With the autoregressive highway (``model.ar_highway``) and ``model.highway_fit:
least_squares`` (the defaults), the highway is first solved in closed form
(:func:`fit_highway`) and held fixed; that linear forecaster is epoch 0, and the epochs
train the network on its residual.

One epoch = one pass over the training windows in a seeded random order. The
validation loss (MSE on scaled targets) drives both ReduceLROnPlateau and early
stopping; after ``min_epochs``, training stops once it has not improved for
``patience`` epochs and the best weights are restored (the recipe of Keras'
``EarlyStopping(restore_best_weights=True)`` and PyTorch's ``ReduceLROnPlateau``).

A budget bounds every run: ``training.max_steps`` optimiser steps per member and
``training.max_time`` of wall clock for all members together (split by :func:`fit_members`),
checked after every step as Lightning's ``Trainer(max_steps=, max_time=)`` does. A budget
that ends an epoch part way still validates that part epoch; the weights returned are the
best by validation loss whatever stopped training, and :attr:`TrainResult.stop_reason` says
what did (:data:`STOP_REASONS`).

On CUDA the whole stacked feature matrix is moved to the device once and windows
are gathered there by index (no per-batch host-to-device copies), under bf16
autocast. Each epoch writes ``checkpoint.pt``; calling :func:`train_member` again
on the same folder resumes after the last finished epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core import artifacts
from pipeline.core.config import PipelineConfig, TrainingConfig
from pipeline.core.errors import DataQualityError, TrainingError
from pipeline.core.progress import Progress
from pipeline.core.runs import per_member
from pipeline.features.windowing import FeatureSet
from pipeline.models.conformal import IntervalCalibration
from pipeline.models.lstm import EVAL_BATCH, LSTMForecaster, WindowTensors, build_model
from pipeline.models.network import RecurrentForecaster

log = logging.getLogger(__name__)

CHECKPOINT = artifacts.CHECKPOINT.name


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``.

    Raises:
        TrainingError: ``cuda`` was requested and no CUDA device is available.
    """
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was requested but no CUDA device is available (torch.cuda.is_available() is False); use --device cpu or auto")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#: why a member's training stopped, in the order they are checked after an epoch
STOP_REASONS = ("early_stopping", "max_steps", "max_time", "max_epochs")


@dataclass
class TrainResult:
    """What one member's training did. ``history`` has one dict per epoch (the last may be a part epoch
    cut by the budget: its ``steps`` tell)."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = float("inf")
    stopped_early: bool = False
    #: one of :data:`STOP_REASONS`; empty while training runs
    stop_reason: str = ""
    #: optimiser steps taken (all epochs, a resumed run's earlier ones included)
    steps: int = 0
    resumed_from_epoch: int = 0
    device: str = "cpu"
    seconds: float = 0.0
    #: windows per optimiser step (``training.batch_size`` or :func:`resolve_batch_size`'s choice)
    batch_size: int = 0
    #: the ridge penalty :func:`fit_highway` chose; ``None`` when the highway was not fitted
    highway_ridge_lambda: float | None = None
    #: validation MSE of the model before the first epoch when that counts as epoch 0 (the
    #: least-squares highway alone); ``best_epoch`` 0 means no epoch beat it. ``None`` otherwise
    start_val_loss: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: the modules whose code decides what a checkpoint holds (their source is part of the fingerprint)
_CODE_FILES = ("models/network.py", "models/lstm.py", "training/lstm.py", "features/windowing.py")


#: the root of the ``pipeline`` package (``_CODE_FILES`` are relative to it)
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def _code_version() -> str:
    """``<package version>+<sha256 of the model, training and features source>``; a code change starts over."""
    from pipeline import __version__

    digest = hashlib.sha256()
    for name in _CODE_FILES:
        digest.update((PACKAGE_ROOT / name).read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def _data_hash(fs: FeatureSet) -> str:
    """sha256 of the feature matrix, target and window starts (what training reads)."""
    digest = hashlib.sha256()
    for arr in (fs.values, fs.target, *(fs.starts[k] for k in sorted(fs.starts))):
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


def _fingerprint(cfg: PipelineConfig, fs: FeatureSet, seed: int, start: str | None = None) -> str:
    """What a checkpoint must match to be resumed: config, data, code version, fitted preprocessing, seed
    and, for a finetune, the weights it started from (``start``: their sha256) and the finetune keys."""
    payload = {
        "model": cfg.model.model_dump(mode="json"),
        "training": cfg.training.model_dump(mode="json", exclude={"device", "progress", "num_threads"}),
        "features": cfg.features.model_dump(mode="json"),
        "data": _data_hash(fs),
        "prep": fs.prep.to_dict(),
        "code": _code_version(),
        "seed": seed,
    }
    if start is not None:
        payload["finetune"] = {"start": start, **cfg.retrain.model_dump(mode="json", exclude={"start_from"})}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


#: batch size bounds of :func:`resolve_batch_size` (neuralforecast's default batch is 32 windows)
BATCH_BOUNDS = (32, 256)


def resolve_batch_size(tc: TrainingConfig, n_train_windows: int) -> int:
    """``training.batch_size`` if set, else ``n_train_windows // min_steps_per_epoch`` clipped to [32, 256].

    With a fixed batch of 256, a data set of a few thousand windows gets a handful of
    optimiser steps per epoch (CO2 weekly: 6), so early stopping and the learning-rate
    schedule, both counted in epochs, act after a few dozen steps. Deriving the batch keeps
    at least ``min_steps_per_epoch`` steps per epoch down to 32-window batches, and leaves
    large data sets at 256. Returns: windows per step (int >= 1).
    """
    if tc.batch_size is not None:
        return tc.batch_size
    low, high = BATCH_BOUNDS
    return int(min(high, max(low, n_train_windows // tc.min_steps_per_epoch)))


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def predict_scaled(model: torch.nn.Module, tensors: WindowTensors, starts: torch.Tensor, batch: int = EVAL_BATCH) -> np.ndarray:
    """Scaled forecasts of one model for windows ``starts`` -> ``(n, horizon)`` float32 numpy.

    Inference runs in float32 on every device (bf16 autocast is for the training step only),
    so a model trained on CUDA serves on CPU the numbers it was evaluated with.
    """
    model.eval()
    outs = [model(tensors.gather(starts[i : i + batch])[0]).float() for i in range(0, len(starts), batch)]
    if not outs:
        return np.empty((0, tensors.H), dtype=np.float32)
    return torch.cat(outs).cpu().numpy()


def _epoch(model, opt, tensors, starts, tc: TrainingConfig, generator, batch_size: int,
           steps_left: int | None = None, deadline: float | None = None, on_step=None) -> tuple[float, int, str | None]:  # fmt: skip
    """One pass over ``starts`` in a seeded order, ended early by the budget.

    ``steps_left``: optimiser steps still allowed (``None``: no limit); ``deadline``: a
    :func:`time.perf_counter` time (``None``: no limit). Both are checked after each step, so
    at least one step is taken. ``on_step(step, steps_in_epoch)`` is called after each step (the
    progress inside a long epoch). Returns the mean training MSE (scaled) over the windows seen,
    the steps taken and ``"max_steps"`` / ``"max_time"`` when the budget ran out, else ``None``.
    """
    n_batches = -(-len(starts) // batch_size)
    model.train()
    order = starts[torch.randperm(len(starts), generator=generator).to(starts.device)]
    total = torch.zeros((), device=tensors.device)  # summed on the device: one sync per epoch
    steps, seen, cut = 0, 0, None
    for i in range(0, len(order), batch_size):
        x, y = tensors.gather(order[i : i + batch_size])
        with _autocast(tensors.device):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip_norm)
        opt.step()
        total += loss.detach() * len(x)
        steps, seen = steps + 1, seen + len(x)
        if on_step is not None:
            on_step(steps, n_batches)
        if steps_left is not None and steps >= steps_left:
            cut = "max_steps"
        elif deadline is not None and time.perf_counter() >= deadline:
            cut = "max_time"
        if cut is not None:
            break
    return float(total) / max(seen, 1), steps, cut


def _val_loss(model, tensors, starts) -> float:
    if len(starts) == 0:
        return float("nan")
    pred = torch.from_numpy(predict_scaled(model, tensors, starts)).to(tensors.device)
    _, y = tensors.gather(starts)
    return float(torch.mean((pred - y) ** 2))


#: ridge penalties tried by :func:`fit_highway`, per window (the penalty is ``lam * n_windows``)
RIDGE_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _regression_batches(model: RecurrentForecaster, tensors: WindowTensors, starts: torch.Tensor):
    """Per batch of windows: ``Z = [highway inputs, 1]`` ``(b, p+1)`` and ``T = y - reference`` ``(b, h)``, float64."""
    for i in range(0, len(starts), EVAL_BATCH):
        x, y = tensors.gather(starts[i : i + EVAL_BATCH])
        yield torch.cat([model.highway_inputs(x), torch.ones_like(x[:, :1, 0])], dim=1).double(), (y - model.reference(x)).double()


def _gram(model: RecurrentForecaster, tensors: WindowTensors, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Z^T Z`` ``(p+1, p+1)`` and ``Z^T T`` ``(p+1, h)`` float64 over the windows ``starts``
    (``p``: the highway's inputs, ``L`` plus ``h x m`` seasonal lags)."""
    p = model.highway.in_features
    zz = torch.zeros(p + 1, p + 1, dtype=torch.float64, device=tensors.device)
    zt = torch.zeros(p + 1, tensors.H, dtype=torch.float64, device=tensors.device)
    for z, t in _regression_batches(model, tensors, starts):
        zz += z.T @ z
        zt += z.T @ t
    return zz, zt


def _linear_sse(model: RecurrentForecaster, tensors: WindowTensors, starts: torch.Tensor, weights: list[torch.Tensor],
                inverses: list[torch.Tensor] | None = None) -> list[float]:
    """Summed squared error on ``starts`` of each ``(p+1, h)`` linear map in ``weights``.

    With ``inverses`` (each map's ``(Z^T Z + penalty)^-1``, ``starts`` its own fitting windows)
    the error is leave-one-out: each residual divided by ``1 - h_ii``, the window's leverage
    (Allen's PRESS, exact for ridge regression; Hastie, Tibshirani & Friedman, ESL 2nd ed., 7.10).
    """
    sse = [0.0] * len(weights)
    for z, t in _regression_batches(model, tensors, starts):
        for k, w in enumerate(weights):
            r = z @ w - t  # (b, h)
            if inverses is not None:
                r = r / (1.0 - ((z @ inverses[k]) * z).sum(dim=1, keepdim=True))
            sse[k] += float((r**2).sum())
    return sse


@torch.no_grad()
def fit_highway(model: RecurrentForecaster, tensors: WindowTensors, train_starts: torch.Tensor, val_starts: torch.Tensor | None) -> dict:
    """Make ``model`` the least-squares linear direct forecaster: the highway solved, the head at zero.

    The highway ``Linear(p -> h)`` is solved in closed form (ridge regression, normal
    equations in float64) from the training windows' highway inputs (the scaled target window
    and, with seasonal lags, their last ``h`` rows, minus the reference: ``p = lookback + h x m``,
    :meth:`RecurrentForecaster.highway_inputs`) to their targets minus
    the reference; the ridge penalty ``lam * n_train`` (intercept not penalised) is the one of
    :data:`RIDGE_GRID` with the lowest validation MSE or, without validation windows
    (``val_starts`` ``None`` or empty), the lowest leave-one-out MSE on the training windows.
    The head's weights and bias are set to zero, so before the first optimiser step the
    model *is* that linear forecaster (NLinear's
    direct linear map, Zeng et al., 2023, arXiv:2205.13504, fitted as in ridge regression,
    Hoerl & Kennard, 1970). :func:`train_member` then holds the highway fixed and trains the
    network on what the linear map misses: the linear-plus-network hybrid of Zhang (2003,
    "Time series forecasting using a hybrid ARIMA and neural network model", Neurocomputing
    50:159-175), with the linear model counted as epoch 0 of early stopping.

    Cost: one pass over the training windows, then one over the validation windows (or a
    second over the training windows), ``O(n (p+1)^2)`` each.

    Returns:
        ``{"ridge_lambda": float, "val_loss": float, "chosen_by": "validation" | "leave-one-out"}``:
        the chosen penalty and its MSE (scaled units) on the windows that chose it.
    """
    if model.highway is None:
        raise ValueError("fit_highway needs a model built with ar_highway")
    was_training = model.training
    model.eval()
    zz, zt = _gram(model, tensors, train_starts)
    n, eye = len(train_starts), torch.eye(zz.shape[0], dtype=torch.float64, device=zz.device)
    eye[-1, -1] = 0.0  # the intercept is not penalised
    systems = [zz + lam * n * eye for lam in RIDGE_GRID]  # (p+1, p+1): small
    weights = [torch.linalg.solve(a, zt) for a in systems]  # each (p+1, h)
    if val_starts is not None and len(val_starts):
        chosen_by, scored = "validation", val_starts
        sse = _linear_sse(model, tensors, val_starts, weights)
    else:
        chosen_by, scored = "leave-one-out", train_starts
        sse = _linear_sse(model, tensors, train_starts, weights, [torch.linalg.inv(a) for a in systems])
    k = int(np.argmin(sse))
    w = weights[k]
    model.highway.weight.copy_(w[:-1].T.to(model.highway.weight.dtype))  # (h, p)
    model.highway.bias.copy_(w[-1].to(model.highway.bias.dtype))  # (h,)
    model.head.weight.zero_()
    model.head.bias.zero_()
    model.train(was_training)
    return {"ridge_lambda": RIDGE_GRID[k], "val_loss": sse[k] / (len(scored) * tensors.H), "chosen_by": chosen_by}


def _save_checkpoint(path: Path, state: dict) -> None:
    """Write ``path`` atomically, keeping the previous checkpoint as ``<name>.prev`` (a fallback if it is corrupt)."""
    from pipeline.core import faults

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    faults.point("checkpoint_written_before_rename")
    if path.exists():
        os.replace(path, path.with_name(path.name + ".prev"))
    os.replace(tmp, path)


def _load_checkpoint(path: Path, device: torch.device) -> dict | None:
    """The checkpoint at ``path``, else its ``.prev`` copy; a corrupt file is renamed ``*.corrupt`` and logged.

    Returns ``None`` when neither is there or readable (training starts from epoch 0).
    """
    import pickle
    import zipfile

    for candidate in (path, path.with_name(path.name + ".prev")):
        if not candidate.exists():
            continue
        try:
            ckpt = torch.load(candidate, map_location=device, weights_only=False)
            if not isinstance(ckpt, dict) or "state" not in ckpt:
                raise ValueError("not a training checkpoint (no 'state')")
            return ckpt
        except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
            bad = candidate.with_name(candidate.name + ".corrupt")
            os.replace(candidate, bad)
            log.warning("checkpoint %s is corrupt or truncated (%s); moved to %s, trying the previous one", candidate, exc, bad.name)
    return None


def _check_finite(epoch: int, train_loss: float, tc: TrainingConfig) -> None:
    if not np.isfinite(train_loss):
        raise TrainingError(
            f"epoch {epoch}: the training loss is {train_loss}; likely causes: a learning rate too high "
            f"(training.learning_rate={tc.learning_rate}), non-finite or unscaled inputs, or exploding gradients "
            f"(training.grad_clip_norm={tc.grad_clip_norm}). No model was saved."
        )


def _progress(tc: TrainingConfig, start: int, desc: str) -> Progress:
    """Epoch progress (:class:`pipeline.core.progress.Progress`): a bar on a terminal, a plain line every 10 s elsewhere."""
    return Progress(tc.max_epochs, desc, "epoch", enabled=tc.progress, initial=start)


@dataclass
class _Session:
    """Model, optimiser, scheduler and early-stopping state of one member: what a checkpoint holds."""

    model: RecurrentForecaster
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.ReduceLROnPlateau
    result: TrainResult
    state: dict[str, Any]

    @classmethod
    def new(cls, fs: FeatureSet, cfg: PipelineConfig, device: torch.device, tc: TrainingConfig | None = None,
            init: dict[str, torch.Tensor] | None = None) -> _Session:  # fmt: skip
        """A fresh session: ``tc`` (default ``cfg.training``) sets the optimiser; ``init`` (a member's
        ``state_dict``, a finetune's start) replaces the random initial weights."""
        tc = tc or cfg.training
        model = build_model(fs.prep.n_features, fs.prep.horizon, cfg.model, fs.prep.lookback, len(fs.prep.lag_steps))
        if init is not None:
            model.load_state_dict(init)
        model = model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=tc.lr_factor, patience=tc.lr_patience)
        return cls(model, opt, sched, TrainResult(device=str(device)), {"epoch": 0, "bad": 0, "best": None, "done": False})

    def stop(self, reason: str) -> None:
        """Training is over, for ``reason`` (one of :data:`STOP_REASONS`)."""
        self.state["done"], self.result.stop_reason = True, reason
        self.result.stopped_early = reason == "early_stopping"

    def resume(self, path: Path, fingerprint: str, device: torch.device) -> None:
        """Load ``path`` if it is a checkpoint of this very training (same fingerprint)."""
        ckpt = _load_checkpoint(path, device)
        if ckpt is None:
            return
        if ckpt.get("fingerprint") != fingerprint:
            log.warning("ignoring checkpoint %s: it belongs to another config, data, code version or preprocessing; training from epoch 0", path)
            return
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"])
        if ckpt.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        self.result, self.state = TrainResult(**ckpt["result"]), ckpt["state"]
        self.result.resumed_from_epoch = self.state["epoch"]
        log.info("resuming %s after epoch %d", path.parent, self.state["epoch"])

    def save(self, path: Path, fingerprint: str) -> None:
        _save_checkpoint(path, {
            "fingerprint": fingerprint, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(), "torch_rng": torch.get_rng_state(), "result": self.result.to_dict(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None, "state": self.state,
        })  # fmt: skip

    def start_from(self, val_loss: float) -> None:
        """The weights as they are count as epoch 0's: kept as the best unless an epoch beats ``val_loss``."""
        self.result.best_val_loss, self.result.best_epoch, self.result.start_val_loss = val_loss, 0, val_loss
        self.state["best"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def record(self, epoch: int, train_loss: float, val_loss: float, seconds: float, tc: TrainingConfig, cut: str | None = None) -> dict:
        """Step the scheduler, keep the best weights, decide early stopping, else the budget's
        ``cut`` (:func:`_epoch`) or ``max_epochs``; returns the history row."""
        self.sched.step(val_loss)
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": self.opt.param_groups[0]["lr"],
               "seconds": seconds, "steps": self.result.steps}  # fmt: skip
        self.result.history.append(row)
        if val_loss < self.result.best_val_loss:
            self.result.best_val_loss, self.result.best_epoch, self.state["bad"] = val_loss, epoch, 0
            self.state["best"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.state["bad"] += 1
        self.state["epoch"] = epoch
        if epoch >= tc.min_epochs and self.state["bad"] >= tc.patience:
            self.stop("early_stopping")
        elif cut is not None:
            self.stop(cut)
        elif epoch >= tc.max_epochs:
            self.stop("max_epochs")
        return row


@dataclass(frozen=True)
class FinetuneStart:
    """The champion a finetune starts from (``retrain.start_from``, written by
    :func:`pipeline.loop.finetune.start_from_champion`).

    Attributes:
        members: each champion member's ``state_dict`` (CPU tensors).
        sha256: of the champion's ``model.pt`` (part of the checkpoint fingerprint).
        info: ``start.json``: ``model``, ``version``, ``run_id`` of the champion.
    """

    members: list[dict[str, torch.Tensor]]
    sha256: str
    info: dict[str, Any]

    @classmethod
    def load(cls, cfg: PipelineConfig, fs: FeatureSet) -> FinetuneStart:
        """Read ``retrain.start_from``.

        Raises:
            ConfigError: the weights are not for ``fs``'s preprocessing (feature count, horizon)
                or ``model.*`` describes another architecture than the champion's.
        """
        from pipeline.core.errors import ConfigError

        folder = Path(cfg.retrain.start_from)
        weights = artifacts.MODEL_WEIGHTS.at(folder)
        payload = torch.load(weights, map_location="cpu", weights_only=True)
        info = artifacts.read_json(artifacts.FINETUNE_START.at(folder))
        who = f"retrain.start_from {folder} ({info.get('model')} v{info.get('version')})"
        if (payload["n_features"], payload["horizon"]) != (fs.prep.n_features, fs.prep.horizon):
            raise ConfigError(f"{who}: weights for {payload['n_features']} features and horizon {payload['horizon']}, "
                              f"but the features have {fs.prep.n_features} and horizon {fs.prep.horizon}")  # fmt: skip
        model = build_model(fs.prep.n_features, fs.prep.horizon, cfg.model, fs.prep.lookback, len(fs.prep.lag_steps))
        for k, state in enumerate(payload["members"]):
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise ConfigError(f"{who}: member {k} does not fit model.* of the config ({cfg.model.model_dump()}); "
                                  f"the champion was built with {payload['model']}: {str(exc).splitlines()[0]}") from None  # fmt: skip
        return cls(payload["members"], hashlib.sha256(weights.read_bytes()).hexdigest(), info)

    def member(self, k: int) -> dict[str, torch.Tensor]:
        """The start of member ``k``: the champion's member ``k`` modulo the champion's count."""
        return self.members[k % len(self.members)]

    @staticmethod
    def training(cfg: PipelineConfig) -> TrainingConfig:
        """``training`` with ``max_epochs = retrain.finetune_epochs`` (0 allowed: the champion's
        weights unchanged) and ``learning_rate = retrain.finetune_lr_factor x training.learning_rate``."""
        r, tc = cfg.retrain, cfg.training
        return tc.model_copy(update={"max_epochs": r.finetune_epochs, "learning_rate": tc.learning_rate * r.finetune_lr_factor})


def train_member(
    fs: FeatureSet,
    cfg: PipelineConfig,
    folder: Path,
    seed: int,
    device: torch.device,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    time_budget_s: float | None = None,
    start: FinetuneStart | None = None,
    member: int = 0,
) -> tuple[RecurrentForecaster, TrainResult]:
    """Train one model on ``fs``'s train windows; early-stop on its val windows, within the budget.

    With ``start`` (``retrain.mode: finetune``) the model starts from the champion's member
    ``member`` (its weights, its highway kept as it is: not refitted) and trains
    :meth:`FinetuneStart.training`'s epochs at its learning rate; the champion's weights count
    as epoch 0, so they are the result unless an epoch lowers the validation loss.

    The budget: at most ``training.max_steps`` optimiser steps and ``time_budget_s`` seconds
    of wall clock (default: all of ``training.max_time``; :func:`fit_members` passes each
    member its share), counted from the start of this member's training (highway fit
    included) plus the seconds of a resumed checkpoint. ``result.stop_reason`` says what ended it.

    Writes ``folder/checkpoint.pt`` after every epoch (atomically; the one before is kept as
    ``checkpoint.pt.prev``); if a checkpoint with the same fingerprint (config, data, code
    version, fitted preprocessing, seed) exists, training resumes after its last epoch (a
    finished run returns at once). A corrupt or truncated checkpoint is set aside
    (``*.corrupt``, logged) and training resumes from the previous one or from epoch 0.

    Raises:
        DataQualityError: no training windows. TrainingError: a non-finite loss.
    """
    tc = cfg.training if start is None else start.training(cfg)
    if len(fs.starts["train"]) == 0:
        raise DataQualityError("no training windows: lower features.lookback/horizon or the test/validation fractions")
    folder.mkdir(parents=True, exist_ok=True)
    set_seed(seed)
    init = None if start is None else start.member(member)
    session, tensors = _Session.new(fs, cfg, device, tc, init), WindowTensors(fs, device)
    train_starts, val_starts = tensors.starts(fs, "train"), tensors.starts(fs, "val")
    has_val = len(val_starts) > 0
    if not has_val:  # no validation part: stop on the training loss
        val_starts = train_starts
    batch_size = resolve_batch_size(tc, len(train_starts))
    if tc.batch_size is None:
        log.info("training.batch_size unset: %d windows per step (%d training windows, at least %d steps per epoch)",
                 batch_size, len(train_starts), tc.min_steps_per_epoch)  # fmt: skip
    fingerprint, ckpt_path = _fingerprint(cfg, fs, seed, None if start is None else start.sha256), folder / CHECKPOINT
    session.resume(ckpt_path, fingerprint, device)
    session.result.batch_size = batch_size
    if time_budget_s is None and tc.max_time is not None:
        time_budget_s = tc.max_time.total_seconds()
    started = time.perf_counter() - session.result.seconds  # the budget's clock: a resumed run's seconds count
    deadline = None if time_budget_s is None else started + time_budget_s
    if start is not None:
        if session.model.highway is not None and cfg.model.highway_fit == "least_squares":
            session.model.highway.requires_grad_(False)  # the champion's least-squares map, kept (not refitted)
        if session.state["epoch"] == 0:  # the champion is epoch 0: an epoch must beat it on the tail
            session.start_from(_val_loss(session.model, tensors, val_starts))
            log.info("finetune from %s v%s member %d: validation MSE %.5g before the first epoch; %d epoch(s) at learning rate %g",
                     start.info.get("model"), start.info.get("version"), member, session.result.best_val_loss, tc.max_epochs, tc.learning_rate)  # fmt: skip
    elif session.model.highway is not None and cfg.model.highway_fit == "least_squares":
        session.model.highway.requires_grad_(False)  # held fixed: the network learns the residual
        if session.state["epoch"] == 0:  # a resumed run keeps its checkpoint's highway, penalty and best weights
            fitted = fit_highway(session.model, tensors, train_starts, val_starts if has_val else None)
            session.result.highway_ridge_lambda = fitted["ridge_lambda"]
            session.start_from(_val_loss(session.model, tensors, val_starts))
            log.info("highway fitted by least squares (ridge lambda %g, chosen by %s): validation MSE %.5g before the first epoch",
                     fitted["ridge_lambda"], fitted["chosen_by"], session.result.best_val_loss)  # fmt: skip
    bar = _progress(tc, session.state["epoch"], f"LSTM seed {seed}")
    while not session.state["done"] and session.state["epoch"] < tc.max_epochs:
        epoch, t0 = session.state["epoch"] + 1, time.perf_counter()
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        steps_left = None if tc.max_steps is None else tc.max_steps - session.result.steps
        def in_epoch(step: int, of: int, epoch: int = epoch) -> None:
            bar.note(batch=f"{step}/{of} of epoch {epoch}")

        train_loss, steps, cut = _epoch(session.model, session.opt, tensors, train_starts, tc, generator, batch_size, steps_left, deadline, in_epoch)
        _check_finite(epoch, train_loss, tc)
        session.result.steps += steps
        row = session.record(epoch, train_loss, _val_loss(session.model, tensors, val_starts), time.perf_counter() - t0, tc, cut)
        session.result.seconds = time.perf_counter() - started
        session.save(ckpt_path, fingerprint)
        bar.update(1, train=f"{row['train_loss']:.4g}", val=f"{row['val_loss']:.4g}",
                   best=f"{session.result.best_val_loss:.4g} (epoch {session.result.best_epoch})", steps=session.result.steps)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    if not session.result.stop_reason:  # a checkpoint already at max_epochs (written before stop reasons were kept)
        session.stop("max_epochs")
    log.info("seed %d: training stopped by %s after %d epoch(s), %d step(s), %.1fs; best epoch %d (validation MSE %.5g)",
             seed, session.result.stop_reason, session.state["epoch"], session.result.steps, session.result.seconds,
             session.result.best_epoch, session.result.best_val_loss)  # fmt: skip
    bar.close(stopped=session.result.stop_reason)
    if session.state["best"] is not None:
        session.model.load_state_dict(session.state["best"])
    return session.model, session.result


def fit_members(
    fs: FeatureSet, cfg: PipelineConfig, work_dir: Path, device: str | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> tuple[list[RecurrentForecaster], list[TrainResult], torch.device]:  # fmt: skip
    """Train ``cfg.training.n_seeds`` members (seeds ``run.seed + k``) into ``work_dir/member_<k>/``
    (checkpoints; a rerun resumes): what :meth:`pipeline.models.lstm.LSTMForecaster.fit` runs.

    With ``retrain.start_from`` (``retrain.mode: finetune``) member ``k`` starts from the
    champion's member ``k`` (modulo the champion's count): :class:`FinetuneStart`.

    ``training.max_time`` is the budget of all members together: member ``k`` of ``n`` gets
    ``(max_time - seconds used by members 0..k-1) / (n - k)``, an equal share of what is left
    (a member that stops early leaves its time to the next). ``training.max_steps`` holds for
    each member (each is one model with its own optimiser, as one Lightning ``Trainer`` each).

    Returns:
        The members in eval mode, one :class:`TrainResult` each, and the device they are on.
    """
    dev = resolve_device(device or cfg.training.device)
    if dev.type == "cpu" and cfg.training.num_threads:
        torch.set_num_threads(cfg.training.num_threads)
    start = FinetuneStart.load(cfg, fs) if cfg.retrain.start_from is not None else None
    members, results = [], []
    n, total = cfg.training.n_seeds, cfg.training.max_time
    for k in range(n):
        share = None if total is None else max(total.total_seconds() - sum(r.seconds for r in results), 0.0) / (n - k)
        model, res = train_member(fs, cfg, Path(work_dir) / f"member_{k}", cfg.run.seed + k, dev, on_epoch_end, share, start, k)
        members.append(model.eval())
        results.append(res)
    return members, results, dev


def plot_loss_curve(history: list[list[dict]], path: Path) -> Path:
    """Train/validation loss per epoch for every member, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for k, rows in enumerate(history):
        epochs = [r["epoch"] for r in rows]
        ax.plot(epochs, [r["train_loss"] for r in rows], label=f"train (seed {k})")
        ax.plot(epochs, [r["val_loss"] for r in rows], "--", label=f"validation (seed {k})")
    ax.set(xlabel="epoch", ylabel="MSE (scaled)", yscale="log", title="LSTM loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def calibrate_intervals(forecaster: LSTMForecaster, fs: FeatureSet, cfg: PipelineConfig) -> IntervalCalibration | None:
    """Split-conformal calibration of the fitted ``forecaster`` on every validation window of ``fs``.

    The levels are ``evaluation.interval_levels``; the scores are absolute residuals per horizon
    step, in ``log1p`` units when ``features.target_transform`` is ``log1p``, divided by each
    window's local scale when ``evaluation.interval_score`` is ``normalised`` (default ``absolute``)
    (:class:`pipeline.models.conformal.IntervalCalibration`). Under the refit protocol
    (``features.validation_tail_steps``, ``retrain.mode: refit``) the validation windows are the
    short tail before ``T``, which is also the test part: the calibration uses what is there
    (``source`` ``validation_tail``; a level that needs more windows than the tail has gets an
    infinite band), and the test coverage of such a run is in-sample.

    Returns:
        The calibration, or ``None`` when no level is configured or there is no validation window
        (``features.validation_fraction: 0``): the model then serves point forecasts only.
    """
    levels = cfg.evaluation.interval_levels
    n = len(fs.starts["val"])
    if not levels or n == 0:
        if levels:
            log.warning("no validation windows: the prediction intervals %s cannot be calibrated; the model serves yhat only", list(levels))
        return None
    source = "validation_tail" if cfg.features.validation_tail_steps else "validation"
    history = fs.lookback_targets(fs.starts["val"]) if cfg.evaluation.interval_score == "normalised" else None
    calibration = IntervalCalibration.fit(fs.targets("val"), forecaster.predict(fs, "val"), levels, fs.prep.target_transform, source, history)
    unsupported = [k for k, q in calibration.quantiles.items() if not np.isfinite(q).all()]
    if unsupported:
        log.warning("%d %s window(s) are too few for the %s%% interval(s): their bands are infinite (need >= 100 / (100 - level) - 1)",
                    n, source, ", ".join(unsupported))  # fmt: skip
    log.info("prediction intervals %s%% calibrated on %d %s window(s), %s scores", ", ".join(calibration.quantiles), n, source, calibration.score)
    return calibration


def run_training(
    cfg: PipelineConfig, run_path: Path, features_dir: Path, device: str | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Stage entry point: train on ``features_dir``, write ``<run>/training/`` atomically. Forecasts
    only: the evaluation stage computes every test metric.

    Writes ``artifacts.MODEL_WEIGHTS`` (``model.pt``), ``TRAINING_FACTS`` (``metrics.json``:
    ``device``, ``train_seconds``, ``predict_seconds``, epochs, ...), ``TRAINING_HISTORY``,
    ``LOSS_CURVE`` and ``TRAINING_FORECASTS`` (``forecasts.npz``; ``test``: ``(n_origins, horizon)``
    original units on the test windows ``test_index`` chosen by
    :func:`pipeline.evaluation.origins.select_origins`; ``train``/``train_index`` likewise for the
    in-sample RMSE; ``train_recent``/``train_recent_index``: every training window of every series whose
    origin lies in the part's last ``max_origins`` x the test's step steps, when the test part has fewer than
    :data:`pipeline.evaluation.cusum.MIN_DIFFERENTIALS` origins, else empty: the CUSUM calibration's top-up).
    ``metrics.json`` also holds ``stop_reason`` and ``steps`` (one per member, see :data:`STOP_REASONS`), the
    budget (``max_steps``, ``max_time_seconds``) and, for a finetune, ``finetune`` (``from_model``, ``from_version``, ``from_run_id``, ``epochs``, ``learning_rate``, ``steps``).
    ``INTERVALS`` (``intervals.json``) holds the prediction intervals' calibration
    (:func:`calibrate_intervals`), absent when there is none. Checkpoints live beside it in
    ``<run>/checkpoints/`` (kept, so a retry resumes; never published as part of the model).
    Returns ``{"training": folder, "device", "stop_reason": one text
    (:func:`pipeline.core.runs.per_member`), "steps": [per member]}``.
    """
    from pipeline.core import faults
    from pipeline.evaluation.cusum import MIN_DIFFERENTIALS
    from pipeline.evaluation.origins import recent_windows, select_origins
    from pipeline.features.windowing import load_features

    fs = load_features(features_dir)
    out = artifacts.step_dir(run_path, artifacts.TRAINING)
    forecaster = LSTMForecaster(cfg, artifacts.step_dir(run_path, artifacts.CHECKPOINTS), device).fit(fs, on_epoch_end)
    test_index, step = select_origins(fs.origin_times("test"), cfg.evaluation, fs.prep.freq)
    train_index, train_step = select_origins(fs.origin_times("train"), cfg.evaluation, fs.prep.freq)
    t0 = time.perf_counter()
    test_pred = forecaster.predict(fs, "test", test_index)
    predict_seconds = time.perf_counter() - t0
    train_pred = forecaster.predict(fs, "train", train_index)
    # a short test part (the refit protocol's tail) gets its CUSUM calibration sample topped up from training windows at the
    # test's own spacing (pipeline.evaluation.cusum.calibrate_from_run): every window of every series whose origin lies in
    # the last max_origins x step steps of the training part
    # (the calibration averages the series per origin: what counts is the distinct origins, not the windows)
    short = len(np.unique(fs.origin_times("test")[test_index])) < MIN_DIFFERENTIALS
    recent_index = recent_windows(fs.origin_times("train"), step * cfg.evaluation.max_origins if short else 0, fs.prep.freq,
                                  limit=step * cfg.evaluation.max_origins)  # fmt: skip
    n_recent = len(recent_index)
    recent_pred = forecaster.predict(fs, "train", recent_index) if n_recent else np.empty((0, fs.prep.horizon))
    calibration = calibrate_intervals(forecaster, fs, cfg)
    results = forecaster.results_
    epochs = sum(len(r.history) for r in results)
    train_seconds = sum(r.seconds for r in results)
    metrics = {
        "best_epochs": [r.best_epoch for r in results], "epochs_run": [len(r.history) for r in results],
        "stopped_early": [r.stopped_early for r in results], "resumed_from_epoch": [r.resumed_from_epoch for r in results],
        "batch_size": [r.batch_size for r in results], "highway_ridge_lambda": [r.highway_ridge_lambda for r in results],
        "start_val_loss": [r.start_val_loss for r in results],
        "stop_reason": [r.stop_reason for r in results], "steps": [r.steps for r in results],
        "max_steps": cfg.training.max_steps,
        "max_time_seconds": cfg.training.max_time.total_seconds() if cfg.training.max_time is not None else None,
        "device": str(forecaster.device_), "train_seconds": train_seconds, "predict_seconds": predict_seconds,
        "samples_per_second": len(fs.starts["train"]) * epochs / train_seconds if train_seconds else None,
        "n_train_windows": int(len(fs.starts["train"])), "n_test_windows": int(len(fs.starts["test"])),
        "n_origins": int(len(test_index)), "origin_step": step,
        "interval_calibration_windows": calibration.n_windows if calibration else 0,
    }  # fmt: skip
    if cfg.retrain.start_from is not None:  # a finetune: what it started from and how it trained
        ftc, info = FinetuneStart.training(cfg), artifacts.read_json(artifacts.FINETUNE_START.at(cfg.retrain.start_from))
        metrics["finetune"] = {"from_model": info.get("model"), "from_version": info.get("version"), "from_run_id": info.get("run_id"),
                               "epochs": ftc.max_epochs, "learning_rate": ftc.learning_rate, "steps": fs.report.get("finetune_steps")}  # fmt: skip
    with artifacts.atomic_dir(out) as tmp:
        forecaster.save(artifacts.MODEL_WEIGHTS.at(tmp))
        np.savez(artifacts.TRAINING_FORECASTS.at(tmp), test=test_pred, test_index=test_index, train=train_pred, train_index=train_index,
                 train_recent=recent_pred, train_recent_index=recent_index, test_step=step, train_step=train_step)  # fmt: skip
        artifacts.write_json(artifacts.TRAINING_HISTORY.at(tmp), [r.history for r in results])
        plot_loss_curve([r.history for r in results], artifacts.LOSS_CURVE.at(tmp))
        artifacts.write_json(artifacts.TRAINING_FACTS.at(tmp), metrics)
        if calibration is not None:
            calibration.save(artifacts.INTERVALS.at(tmp))
        faults.point("training_written_before_rename")
    log.info("LSTM trained on %s in %.1fs; forecasts for %d test origins written", metrics["device"], train_seconds, len(test_index))
    return {"training": str(out), "device": metrics["device"], "stop_reason": per_member(metrics["stop_reason"]), "steps": metrics["steps"]}
