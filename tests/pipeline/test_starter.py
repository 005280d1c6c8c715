"""A new data set's first steps: ``lstm-pipeline init`` writes a defaults-only config; a failed gate says what next."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.cli import main
from pipeline.core.config import load_config
from pipeline.evaluation.comparison import comparison_gate, gate_guidance
from tests.conftest import ROOT, tiny_frame


def test_init_writes_a_defaults_only_config_that_validates_the_file(tmp_path, capsys):
    csv = tmp_path / "my_load.csv"
    frame = tiny_frame(n=400)
    frame["temp"] = frame["temp"].round().astype(int)  # integer cells are numbers too
    frame.to_csv(csv, index=False)
    out = tmp_path / "configs" / "mine.yaml"
    assert main(["init", "--csv", str(csv), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    raw = yaml.safe_load(out.read_text())
    assert set(raw) == {"name", "data", "features", "mlflow"}  # nothing tuned: model, training, baselines all default
    assert raw["data"] == {"path": "../my_load.csv", "timestamp_column": "time", "target_column": "load", "covariates": ["temp"],
                           "categorical_covariates": ["wind"], "freq": "h"}  # fmt: skip
    assert raw["features"] == {"lookback": 168, "horizon": 24} == result["features"]
    cfg = load_config(out)
    assert cfg.data.path == csv and cfg.model.ar_highway  # the default highway, not a copied `false`
    assert "ar_highway: false" in out.read_text()  # named in the header as a value not to copy
    assert main(["validate", "--config", str(out)]) == 0  # the starter config reads the file it was made from
    before = out.read_text()
    assert main(["init", "--csv", str(csv), "--out", str(out)]) == 2  # never overwrites: a usage error
    assert out.read_text() == before and "never overwrites" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("freq", "expected_freq", "windows"),
    [("D", "D", (56, 7)), ("30min", "30min", (336, 48)), ("W-SUN", "W-SUN", (52, 4)), ("MS", "MS", (24, 3))],
)
def test_init_infers_freq_and_window_sizes(tmp_path, freq, expected_freq, windows):
    from pipeline.data.starter import window_sizes, write_starter_config

    ds = pd.date_range("2020-01-05", periods=60, freq=freq)
    frame = pd.DataFrame({"date": ds.strftime("%Y-%m-%d %H:%M"), "sales": np.arange(60.0), "region": "north"})
    frame = frame.drop(index=[10, 11])  # a gap: infer_freq gives up, the most common step does not
    frame.to_csv(tmp_path / "s.csv", index=False)
    result = write_starter_config(tmp_path / "s.csv", out=tmp_path / "s.yaml")
    assert result["data"]["freq"] == expected_freq and (result["features"]["lookback"], result["features"]["horizon"]) == windows == window_sizes(freq)
    assert result["data"]["categorical_covariates"] == ["region"] and result["data"]["timestamp_column"] == "date"


def test_init_finds_the_series_column_of_a_long_file(tmp_path):
    from pipeline.data.starter import write_starter_config

    parts = [tiny_frame(n=50).assign(site=name) for name in ("a", "b")]
    pd.concat(parts).to_csv(tmp_path / "sites.csv", index=False)
    data = write_starter_config(tmp_path / "sites.csv", out=tmp_path / "sites.yaml")["data"]
    assert data["series_id_column"] == "site" and data["categorical_covariates"] == ["wind"] and data["freq"] == "h"


def test_a_failed_gate_says_what_was_compared_the_noise_floor_and_what_to_try():
    cfg = load_config(ROOT / "configs" / "synthetic_sine.yaml")  # ar_highway: false, a generated series with noise_std 0.1
    failed = comparison_gate(0.20, {"AutoETS": 0.104, "Naive": 0.3}, 0.05)
    lines = gate_guidance(cfg, failed, {"epochs_run": [400]}, 0.1, season_length=63)
    text = "\n".join(lines)
    assert lines[0].startswith("compared: LSTM test RMSE 0.2 against the best of") and "(AutoETS 0.104)" in lines[0]
    assert "noise floor: RMSE 0.1" in text and "below it: no forecaster can pass it" in text  # 0.95 x 0.104 < 0.1
    assert "remove model.ar_highway: false" in text and "training.max_epochs" in text
    assert "features.lookback >= one season (63 steps; now 50)" in text
    assert "try: features.seasonal_lags: [168] (the target one season back" in text  # hourly, lookback 50: the week lies past it
    derived = cfg.model_copy(update={"features": cfg.features.model_copy(update={"seasonal_lags": None})})
    dropped = "\n".join(gate_guidance(derived, failed, {}, 0.1, season_length=63, resolved_lags=[]))
    assert "try: features.seasonal_lags: [168] (derived but not used: their lags fall into gaps" in dropped
    assert "seasonal_lags" not in "\n".join(gate_guidance(derived, failed, {}, 0.1, season_length=63, resolved_lags=[168]))  # used: nothing to try
    assert "lookback" not in "\n".join(gate_guidance(cfg, failed, {}, 0.1, season_length=50))
    assert gate_guidance(cfg, comparison_gate(0.05, {"AutoETS": 0.106}, 0.05), {}, 0.05, 63) == []  # passed: nothing to say
