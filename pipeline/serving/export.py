"""ONNX export of the whole scaled-unit forward pass, and an onnxruntime forecaster that serves it.

The exported graph is the ensemble a registered version forecasts with
(:meth:`pipeline.models.lstm.LSTMForecaster._ensemble`): every member
(:class:`pipeline.models.network.RecurrentForecaster`: recurrent stack, head, the least-squares
autoregressive highway, the reference level added back) and the members' mean, in float32,
``x (batch, lookback, n_features) float32, scaled -> y (batch, horizon) float32, scaled``, the
batch axis dynamic. What surrounds it stays in Python and ships beside it as plain JSON: the
fitted preprocessing (``preprocessing.json``: raw -> scaled inputs, scaled -> original units),
so the folder alone reproduces the pyfunc's forecasts with :class:`OnnxForecaster` in
:class:`pipeline.serving.pyfunc.ForecastModel` (no torch needed to serve it).

Exporter: PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) at
opset 17 (https://docs.pytorch.org/docs/stable/onnx_torchscript.html). The newer
``torch.export``-based exporter (``dynamo=True``, PyTorch's default since 2.9) needs
``onnxscript``, writes opset 18 and, for this graph, fails its own down-conversion to 17
(checked with torch 2.13 / onnxscript 0.7, 2026-12-05); the TorchScript exporter emits opset 17
directly. ONNX operators: https://onnx.ai/onnx/operators/ (``LSTM``, ``GRU``, ``Gemm``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core import artifacts
from pipeline.features.windowing import Preprocessor

log = logging.getLogger(__name__)

#: ONNX opset of the exported graph
OPSET = 17
#: file names in an export folder
ONNX_FILE, PREPROCESSING_FILE, MANIFEST_FILE, INTERVALS_FILE = (
    a.name for a in (artifacts.ONNX_MODEL, artifacts.ONNX_PREPROCESSING, artifacts.ONNX_MANIFEST, artifacts.ONNX_INTERVALS)
)
INPUT_NAME, OUTPUT_NAME = "x", "y_scaled"


def _ensemble_module(forecaster):
    """The forecaster's members and their mean as one ``torch.nn.Module`` (eval mode, on CPU)."""
    import torch

    class Ensemble(torch.nn.Module):
        def __init__(self, members):
            super().__init__()
            self.members = torch.nn.ModuleList(members)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, lookback, F) -> (batch, horizon)
            return torch.stack([m(x).float() for m in self.members]).mean(dim=0)  # as LSTMForecaster._ensemble

    return Ensemble([m.to("cpu") for m in forecaster.models_]).eval()


def onnx_bytes(forecaster) -> bytes:
    """The serialized ONNX model (opset :data:`OPSET`, dynamic batch) of a fitted
    :class:`pipeline.models.lstm.LSTMForecaster`'s ensemble; see the module docstring for the graph."""
    import io
    import warnings

    import torch

    prep = forecaster.prep_
    example = torch.zeros(2, prep.lookback, prep.n_features, dtype=torch.float32)
    buffer = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        torch.onnx.export(
            _ensemble_module(forecaster), (example,), buffer, opset_version=OPSET, dynamo=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )  # fmt: skip
    for w in caught:  # the exporter's deprecation and tracer notes; the tests check the graph against torch
        log.debug("onnx export: %s", w.message)
    return buffer.getvalue()


def export_onnx(forecaster, out_dir: Path, meta: dict[str, Any] | None = None, calibration=None) -> dict[str, Any]:
    """Write ``model.onnx``, ``preprocessing.json``, ``export.json`` (what was exported) and, for a version
    with prediction intervals, ``intervals.json`` into ``out_dir``.

    Args:
        forecaster: a fitted :class:`pipeline.models.lstm.LSTMForecaster` (``models_``, ``prep_``).
        meta: recorded in ``export.json`` beside the graph's facts (model name, version).
        calibration: the version's :class:`pipeline.models.conformal.IntervalCalibration`, or ``None``.

    Returns:
        The manifest: ``{"onnx", "preprocessing", "intervals" (path or None), "opset", "input", "output",
        "members", "lookback", "n_features", "horizon", ...meta}`` (paths as strings).
    """
    from pipeline.core import artifacts

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prep = forecaster.prep_
    model = onnx_bytes(forecaster)
    tmp = out_dir / f".{ONNX_FILE}.tmp"
    tmp.write_bytes(model)
    tmp.replace(out_dir / ONNX_FILE)
    artifacts.write_json(out_dir / PREPROCESSING_FILE, prep.to_dict())
    intervals = out_dir / INTERVALS_FILE
    if calibration is not None:
        calibration.save(intervals)
    elif intervals.exists():  # a re-export of a version without intervals into an old folder
        intervals.unlink()
    manifest = {
        **(meta or {}), "onnx": str(out_dir / ONNX_FILE), "preprocessing": str(out_dir / PREPROCESSING_FILE),
        "intervals": str(intervals) if calibration is not None else None, "opset": OPSET,
        "input": {"name": INPUT_NAME, "shape": ["batch", prep.lookback, prep.n_features], "dtype": "float32", "units": "scaled"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", prep.horizon], "dtype": "float32", "units": "scaled"},
        "members": len(forecaster.models_), "lookback": prep.lookback, "n_features": prep.n_features, "horizon": prep.horizon,
    }  # fmt: skip
    artifacts.write_json(out_dir / MANIFEST_FILE, manifest)
    return manifest


def load_folder(folder: Path):
    """The pyfunc's forecaster served from an :func:`export_onnx` folder alone (no torch, no registry):
    ``pipeline.serving.pyfunc.ForecastModel`` with :class:`OnnxForecaster` and the folder's interval
    calibration when it has one, so ``.predict(None, raw)`` returns ``yhat`` and the
    ``yhat_lo_<level>``/``yhat_hi_<level>`` columns as the registered version does.

    Raises:
        DataLoadError: a file is missing or unreadable (names it).
    """
    from pipeline.models.conformal import IntervalCalibration
    from pipeline.serving.pyfunc import ForecastModel

    folder = Path(folder)
    intervals = folder / INTERVALS_FILE
    return ForecastModel().use(OnnxForecaster.load(folder), None, IntervalCalibration.load(intervals) if intervals.exists() else None)


class OnnxForecaster:
    """The ensemble run by onnxruntime, with the forecaster interface the pyfunc serves
    (``prep_``, ``predict_windows``), so ``ForecastModel().use(OnnxForecaster(...))`` is the pyfunc
    with its network swapped and everything else (raw -> long, transform, output frame) unchanged.

    Args:
        model: the serialized ONNX model (bytes) or a path to it.
        prep: its fitted preprocessing.
    """

    def __init__(self, model: bytes | str | Path, prep: Preprocessor):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        source = str(model) if isinstance(model, Path) else model
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.prep_ = prep

    @classmethod
    def load(cls, folder: Path) -> OnnxForecaster:
        """From an :func:`export_onnx` folder (``model.onnx`` + ``preprocessing.json``).

        Raises:
            DataLoadError: a file is missing or unreadable (names it).
        """
        from pipeline.core.errors import DataLoadError

        folder = Path(folder)
        try:
            prep = Preprocessor.from_dict(json.loads((folder / PREPROCESSING_FILE).read_text()))
            if not (folder / ONNX_FILE).is_file():
                raise FileNotFoundError(folder / ONNX_FILE)
        except (OSError, ValueError, KeyError) as exc:
            raise DataLoadError(f"ONNX export folder {folder}: expected {ONNX_FILE} and {PREPROCESSING_FILE}, could not read them: {exc}") from exc
        return cls(folder / ONNX_FILE, prep)

    def predict_scaled(self, x: np.ndarray) -> np.ndarray:
        """``x (n, lookback, n_features)`` float32 scaled -> ``(n, horizon)`` float32 scaled."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.empty((0, self.prep_.horizon), np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    def predict_windows(self, x: np.ndarray) -> np.ndarray:
        """As :meth:`pipeline.models.lstm.LSTMForecaster.predict_windows`: scaled windows -> ``(n, horizon)``
        float64 in original units.

        Raises:
            ValueError: ``x`` is not ``(n, lookback, n_features)``.
        """
        x = np.asarray(x, dtype=np.float32)
        expected = (self.prep_.lookback, self.prep_.n_features)
        if x.ndim != 3 or x.shape[1:] != expected:
            raise ValueError(f"expected windows of shape (n, {expected[0]}, {expected[1]}), got {x.shape}")
        return self.prep_.inverse_target(self.predict_scaled(x))
