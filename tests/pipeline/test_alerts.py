"""Data-fault alerts after the check: store rows, ``lstm-pipeline alerts``, the Airflow notifier (no servers)."""

from __future__ import annotations

import json
import logging
import sqlite3

import pandas as pd
import pytest
import yaml

from pipeline.cli import main
from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError
from pipeline.store.sql import SCHEMA_VERSION, ForecastStore

FAULT = {
    "column": "TEMP", "unique_id": "series_0", "kind": "shift", "since": "2014-03-01T04:00:00",
    "message": "data fault in 'TEMP': median 41 against 5 in the reference window, a shift of +8.4 reference IQRs (limit 6)",
    "measured": {"median_shift_iqr": 8.4, "iqr_ratio": 1.8},
}  # fmt: skip


def _check(as_of: str, faults: list[dict], model: str = "m") -> dict:
    return {"check_id": f"{model}@{as_of}", "model_name": model, "as_of": as_of, "decision": "data_fault" if faults else "ok", "data_faults": faults}


@pytest.fixture
def store(tmp_path):
    return ForecastStore(f"sqlite:///{tmp_path / 'forecasts.db'}")


def test_alerts_round_trip_newest_first_and_a_rerun_replaces_its_rows(store):
    stuck = {**FAULT, "column": "pm2.5", "kind": "stuck", "measured": {"value": 57.0, "steps": 30}}
    assert store.record_alerts(_check("2014-03-01T00:00:00", [FAULT])) == 1
    assert store.record_alerts(_check("2014-03-02T00:00:00", [FAULT, stuck])) == 2
    store.record_alerts(_check("2014-03-02T00:00:00", [FAULT], model="other"))
    rows = store.alerts("m")
    assert [(r["as_of"], r["column"], r["kind"]) for r in rows] == [
        (pd.Timestamp("2014-03-02"), "TEMP", "shift"), (pd.Timestamp("2014-03-02"), "pm2.5", "stuck"), (pd.Timestamp("2014-03-01"), "TEMP", "shift"),
    ]  # fmt: skip
    assert rows[0]["since"] == pd.Timestamp("2014-03-01T04:00") and rows[0]["measured"] == FAULT["measured"]
    assert rows[0]["message"] == FAULT["message"] and rows[0]["check_id"] == "m@2014-03-02T00:00:00"
    assert [r["as_of"] for r in store.alerts("m", since="2014-03-02")] == [pd.Timestamp("2014-03-02")] * 2
    store.record_alerts(_check("2014-03-02T00:00:00", []))  # the rerun found nothing: its rows go
    assert [r["as_of"] for r in store.alerts("m")] == [pd.Timestamp("2014-03-01")]


def test_a_version_1_store_is_migrated_keeping_its_rows(tmp_path):
    path = tmp_path / "old.db"
    old = ForecastStore(f"sqlite:///{path}")
    old.record_check({"check_id": "m@x", "model_name": "m", "as_of": "2014-01-01", "decision": "ok"})
    db = sqlite3.connect(path)  # what a database written before the alerts existed looks like
    db.execute("drop table alerts")
    db.execute("delete from schema_version where version > 1")
    db.commit()
    db.close()
    store = ForecastStore(f"sqlite:///{path}")
    assert store.record_alerts(_check("2014-03-01T00:00:00", [FAULT])) == 1
    assert store.schema_version == SCHEMA_VERSION == 4
    assert [c["check_id"] for c in store.last_checks("m")] == ["m@x"]


def _config(tmp_path, store_url: str | None = None) -> str:
    raw = {
        "data": {"synthetic": {}, "timestamp_column": "time", "target_column": "load", "covariates": ["TEMP"], "freq": "h"},
        "features": {"lookback": 24, "horizon": 4}, "mlflow": {"registered_model_name": "m"},
        "monitoring": {"store_url": store_url or f"sqlite:///{tmp_path / 'forecasts.db'}"},
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_alerts_command_prints_the_rows_and_json(tmp_path, store, capsys):
    store.record_alerts(_check("2014-03-01T00:00:00", [FAULT]))
    store.record_alerts(_check("2014-03-05T00:00:00", [{**FAULT, "since": "2014-03-04T10:00:00"}]))
    config = _config(tmp_path)
    assert main(["alerts", "--config", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "2014-03-05T00:00:00  TEMP (shift, series series_0) since 2014-03-04T10:00:00  [m@2014-03-05T00:00:00]"
    assert lines[1] == f"  {FAULT['message']}" and len(lines) == 4
    assert main(["alerts", "--config", config, "--since", "2014-03-02", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out["rows"] == 1 and out["since"] == "2014-03-02" and out["alerts"][0]["column"] == "TEMP"
    assert out["alerts"][0]["measured"] == FAULT["measured"]
    assert main(["alerts", "--config", config, "--since", "2014-04-01"]) == 0
    assert capsys.readouterr().out.strip() == "no data-fault alerts for m in checks as of 2014-04-01 or later"


def test_alerts_command_bad_input_is_a_located_error_without_traceback(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["alerts", "--config", config, "--since", "yesterday", "--json"]) == 2
    captured = capsys.readouterr()
    assert "--since 'yesterday': expected an ISO timestamp" in captured.err and "Traceback" not in captured.err
    assert json.loads(captured.out.splitlines()[-1])["kind"] == "ConfigError"
    assert main(["alerts", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["alerts", "--config", _config(tmp_path, f"sqlite:///{blocker}/x.db")]) == 1
    err = capsys.readouterr().err
    assert "error (StoreError" in err and "unreachable" in err and "Traceback" not in err


# ------------------------------------------------------------------ the Airflow notifier

from airflow.sdk import BaseNotifier  # noqa: E402  (Airflow only below: the DAG's side)

from pipeline.loop import notifiers  # noqa: E402

SENT: list[dict] = []


class RecordingNotifier(BaseNotifier):
    """A notifier a user could configure (``monitoring.alerts.notifier``): records what it was sent."""

    def __init__(self, message: str, alerts: list[dict]):
        super().__init__()
        self.message, self.alerts = message, alerts

    def notify(self, context) -> None:
        SENT.append({"message": self.message, "alerts": self.alerts, "run_id": context.get("run_id")})


def test_the_default_notifier_logs_each_fault_at_warning(tmp_path, caplog):
    cfg = load_config(_config(tmp_path))
    with caplog.at_level(logging.WARNING, logger="pipeline.loop.notifiers"):
        assert notifiers.alert(cfg, _check("2014-03-01T00:00:00", [FAULT]), {"run_id": "r1"}) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("check m@2014-03-01T00:00:00: DATA FAULT TEMP (shift) since 2014-03-01T04:00:00") for w in warnings)
    assert any(w.startswith("DATA FAULT ALERT (r1): check m@2014-03-01T00:00:00: 1 data fault(s), no retrain triggered") for w in warnings)
    caplog.clear()
    assert notifiers.alert(cfg, _check("2014-03-02T00:00:00", []), {}) == 0 and not caplog.records


def test_the_configured_notifier_class_is_called_once_per_check(tmp_path):
    raw = yaml.safe_load(open(_config(tmp_path)))
    raw["monitoring"]["alerts"] = {"notifier": f"{__name__}.RecordingNotifier"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    SENT.clear()
    notifiers.alert(load_config(tmp_path / "config.yaml"), _check("2014-03-01T00:00:00", [FAULT, {**FAULT, "column": "load"}]), {"run_id": "r2"})
    (sent,) = SENT
    assert sent["run_id"] == "r2" and [a["column"] for a in sent["alerts"]] == ["TEMP", "load"]
    assert sent["message"].splitlines()[0] == "check m@2014-03-01T00:00:00: 2 data fault(s), no retrain triggered"


@pytest.mark.parametrize(("path", "expected"), [("nowhere.Notifier", "cannot import 'nowhere.Notifier'"), ("pipeline.loop.notifiers.alert", "not an airflow.sdk.BaseNotifier")])
def test_a_notifier_path_that_is_not_a_notifier_is_a_config_error(path, expected):
    with pytest.raises(ConfigError, match=rf"monitoring\.alerts\.notifier: .*{expected}"):
        notifiers.notifier_class(path)
