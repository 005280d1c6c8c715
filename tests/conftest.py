"""Shared fixtures: tiny configs and CSV files written into ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def tiny_frame(n: int = 120, seed: int = 0, start: str = "2024-01-01 00:00:00") -> pd.DataFrame:
    """An hourly frame: target ``load`` (daily cycle + noise), covariate ``temp``, categorical ``wind``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return pd.DataFrame(
        {
            "time": pd.date_range(start, periods=n, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
            "load": 10 + 3 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.3, n),
            "temp": 5 + np.cos(2 * np.pi * t / 24) + rng.normal(0, 0.1, n),
            "wind": np.array(["N", "S", "E"])[t % 3],
        }
    )


def tiny_config_dict(csv: Path, artifact_root: Path, **sections) -> dict:
    cfg = {
        "name": "tiny",
        "data": {
            "path": str(csv),
            "timestamp_column": "time",
            "target_column": "load",
            "covariates": ["temp"],
            "categorical_covariates": ["wind"],
            "freq": "h",
            "max_gap": 2,
            "max_missing_fraction": 0.2,
        },
        "features": {"lookback": 12, "horizon": 3, "validation_fraction": 0.1, "test_fraction": 0.2, "scaler": "standard"},
        "training": {"max_epochs": 3, "min_epochs": 1, "patience": 2, "batch_size": 32, "progress": False},
        "baselines": {"season_length": 24, "fit_window": 100, "context_window": 60},
        "run": {"artifact_root": str(artifact_root), "seed": 7},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


@pytest.fixture
def make_case(tmp_path):
    """``make_case(frame=None, csv_text=None, **sections) -> (config_path, csv_path)``."""

    def _make(frame: pd.DataFrame | None = None, csv_text: str | None = None, **sections):
        csv = tmp_path / "data" / "input.csv"
        csv.parent.mkdir(exist_ok=True)
        if csv_text is not None:
            csv.write_text(csv_text)
        else:
            (tiny_frame() if frame is None else frame).to_csv(csv, index=False)
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(tiny_config_dict(csv, tmp_path / "artifacts", **sections)))
        return config, csv

    return _make
