"""The recurrent forecaster: LSTM (or GRU) encoder + direct multi-output head.

Direct multi-horizon strategy (all ``h`` steps from one hidden state), as in
neuralforecast's LSTM with a linear decoder and the MQ-RNN "direct" forecaster
(Wen et al., 2017, arXiv:1711.11053). With ``predict_delta`` the head predicts the
change from the last observed (scaled) target, which keeps forecasts sensible when a
trend carries the series past the training range. With ``ar_highway`` a linear map of the
target's whole lookback window to the ``h`` outputs is added to the network's output: the
autoregressive "highway" of LSTNet (Lai et al., 2018, "Modeling Long- and Short-Term Temporal
Patterns with Deep Neural Networks", SIGIR, arXiv:1703.07015), over the whole window as in
the linear direct forecasters DLinear/NLinear (Zeng et al., 2023, AAAI, arXiv:2205.13504).
The network can then copy seasonal lags and a linear autoregression instead of learning them.
By default training solves that map by least squares first and holds it fixed
(:func:`pipeline.training.lstm.fit_highway`). With seasonal lags (``features.seasonal_lags``:
``seasonal_channels`` input columns right after the target, whose last ``h`` rows hold the
target one season before each target step) the highway also reads those ``h x m`` values, so
a seasonal naive forecast, or one adjusted by the recent level, is one linear map away.
"""

from __future__ import annotations

import torch
from torch import nn


class RecurrentForecaster(nn.Module):
    """``x (batch, lookback, n_features) float32, scaled -> (batch, horizon) float32, scaled``.

    Feature 0 of ``x`` must be the scaled target and features ``1 .. seasonal_channels`` its
    seasonal lags (see ``Preprocessor.feature_names``).

    Args:
        n_features: size of the last input axis.
        horizon: forecast steps ``h`` returned per window.
        hidden_size, num_layers: recurrent stack size.
        dropout: dropout between recurrent layers (``torch.nn.LSTM(dropout=...)``, so only
            when ``num_layers > 1``) and before the head.
        cell: ``"lstm"`` or ``"gru"``.
        predict_delta: add the last observed target to the head's output.
        relative_inputs: feed the target minus its window mean and add that mean back to
            the output (window normalisation, as neuralforecast's temporal scalers do), so
            a level outside the training range looks familiar; implies ``predict_delta``.
        ar_highway: add ``Linear(lookback -> horizon)`` of the scaled target window, taken
            minus the same reference as the network's output (deviations). Its weights start at
            zero, so an untrained highway leaves the network's forecast unchanged.
        lookback: window length; required with ``ar_highway``.
        seasonal_channels: ``m``, the seasonal-lag columns (features ``1 .. m``); the highway also
            reads their last ``horizon`` rows, and with ``relative_inputs`` they are shifted as the target is.
    """

    def __init__(
        self,
        n_features: int,
        horizon: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.1,
        cell: str = "lstm",
        predict_delta: bool = True,
        relative_inputs: bool = False,
        ar_highway: bool = False,
        lookback: int | None = None,
        seasonal_channels: int = 0,
    ):
        super().__init__()
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn_cls(
            input_size=n_features,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, horizon)
        self.predict_delta = predict_delta or relative_inputs
        self.relative_inputs = relative_inputs
        self.horizon, self.seasonal_channels = horizon, seasonal_channels
        self.highway = None
        if ar_highway:
            if not lookback:
                raise ValueError("ar_highway needs the lookback (window length) of the inputs")
            self.highway = nn.Linear(lookback + horizon * seasonal_channels, horizon)
            nn.init.zeros_(self.highway.weight)
            nn.init.zeros_(self.highway.bias)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The level the output is relative to: ``(batch, 1)`` scaled target.

        The last observed value with ``predict_delta``, the window mean with
        ``relative_inputs``, zeros otherwise.
        """
        if self.relative_inputs:
            return x[:, :, 0].mean(dim=1, keepdim=True)
        if self.predict_delta:
            return x[:, -1, :1]
        return torch.zeros_like(x[:, -1, :1])

    def highway_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the highway sees, minus :meth:`reference`: the scaled target window, then the last ``horizon``
        rows of each seasonal-lag column, ``(batch, lookback + horizon * seasonal_channels)``."""
        ref = self.reference(x)  # (batch, 1)
        if not self.seasonal_channels:
            return x[:, :, 0] - ref
        lags = x[:, -self.horizon :, 1 : 1 + self.seasonal_channels] - ref[:, :, None]  # (batch, h, m)
        return torch.cat([x[:, :, 0] - ref, lags.flatten(1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ref = self.reference(x)  # (batch, 1)
        if self.relative_inputs:  # the recurrent part sees the target (and its seasonal lags) minus its window mean
            k = 1 + self.seasonal_channels
            x_in = torch.cat([x[:, :, :k] - ref[:, None, :], x[:, :, k:]], dim=2)  # (batch, lookback, F)
        else:
            x_in = x
        out, _ = self.rnn(x_in)  # (batch, lookback, n_features) -> (batch, lookback, hidden)
        last = self.dropout(out[:, -1, :])  # last time step: (batch, hidden)
        y_hat = self.head(last)  # (batch, hidden) -> (batch, horizon)
        if self.highway is not None:  # (batch, lookback [+ h * m]) target window (and lags) minus the reference
            with torch.autocast(x.device.type, enabled=False):  # float32 under bf16 training too: it is solved exactly
                y_hat = y_hat.float() + self.highway(self.highway_inputs(x).float())
        return y_hat + ref  # + reference level (last value, window mean or 0), (batch, 1) broadcast
