"""The monitoring check end to end against a real MLflow server: train as of T0, check at T0 + 3 days."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.cli import main
from pipeline.core.config import load_config
from pipeline.core.errors import MonitoringError, RegistryError
from pipeline.loop.monitoring import run_check
from pipeline.runner import run_training_pipeline
from pipeline.store.sql import store_for
from tests.conftest import _free_port, register_folder, sine_frame, write_sine_case

pytestmark = pytest.mark.slow
MODEL_NAME = "monitored-sine"
T0 = pd.Timestamp("2024-01-17 16:00")  # row 400 of the hourly series
T = T0 + pd.Timedelta("3D")
MONITORING = {"window": "2D", "min_origins": 24, "cooldown": "1D", "max_staleness": "1D"}


def _write(root, frame, name: str, **monitoring) -> str:
    """A config over ``frame`` (as CSV) with its own forecast store."""
    raw = yaml.safe_load((root / "config.yaml").read_text())
    frame.to_csv(root / f"{name}.csv", index=False)
    raw["data"]["path"] = str(root / f"{name}.csv")
    raw["monitoring"] = {**MONITORING, "store_url": f"sqlite:///{root / name}.db", **monitoring}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _scaled(frame: pd.DataFrame, factor: float = 3.0) -> pd.DataFrame:
    out = frame.copy()
    after = pd.to_datetime(out["time"]) >= T0
    out.loc[after, "load"] = out.loc[after, "load"] * factor
    return out


@pytest.fixture(scope="module")
def trained(mlflow_server, tmp_path_factory):
    """One version trained and registered as of T0 on 600 hourly rows (it sees the first 400)."""
    root = tmp_path_factory.mktemp("monitoring")
    write_sine_case(root, "monitored-sine", MODEL_NAME)
    frame = sine_frame(n=600)
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    try:
        cfg = load_config(_write(root, frame, "clean"))
        result = run_training_pipeline(cfg, root / "artifacts" / "train-t0", as_of=T0.isoformat())
        assert result["registered_version"] == 1, result
        yield {"root": root, "frame": frame, "uri": mlflow_server, "result": result}
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if old is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", old)


@pytest.fixture
def env(trained, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["uri"])
    return trained


def test_as_of_is_recorded_on_the_run_and_the_version(env):
    import mlflow

    client = mlflow.tracking.MlflowClient(env["uri"])
    version = client.get_model_version(MODEL_NAME, "1")
    assert version.tags["as_of"] == T0.isoformat()
    assert client.get_run(version.run_id).data.tags["as_of"] == T0.isoformat()
    validated = pd.read_parquet(env["root"] / "artifacts" / "train-t0" / "validation" / "data.parquet")
    assert validated["ds"].max() == T0 - pd.Timedelta("1h")


def test_clean_data_is_ok_and_a_target_scaled_x3_triggers_retrain(env):
    clean = run_check(load_config(_write(env["root"], env["frame"], "clean")), T, since=T0)
    assert clean["decision"] == "ok", clean["reasons"]
    assert clean["n_origins_scored"] == 44  # origins T-48h .. T-5h have all 4 targets observed
    assert clean["rolling_rmse"] < clean["threshold"] == pytest.approx(2 * clean["training_rmse"])
    assert clean["drift_share"] is not None and "y" not in clean["drifted_columns"]
    scaled = run_check(load_config(_write(env["root"], _scaled(env["frame"]), "scaled")), T, since=T0)
    assert scaled["decision"] == "retrain", scaled["reasons"]
    assert scaled["rolling_rmse"] > scaled["threshold"]
    assert "y" in scaled["drifted_columns"]
    assert scaled["trigger_run_id"] == "retrain__monitored-sine_2024-01-20T16_00_00"
    assert scaled["conf"]["as_of"] == T.isoformat() and scaled["conf"]["check_id"] == scaled["check_id"]
    for name in ("drift_report.html", "drift_report.json", "check.json"):
        assert (env["root"] / "artifacts" / "monitoring" / "monitored-sine_2024-01-20T16_00_00" / name).exists()


def test_the_same_interval_twice_gives_the_same_rows_and_no_second_trigger(env):
    cfg = load_config(_write(env["root"], _scaled(env["frame"]), "twice"))
    first = run_check(cfg, T, since=T0)
    db = sqlite3.connect(env["root"] / "twice.db")
    counts = [db.execute(f"select count(*) from {t}").fetchone()[0] for t in ("forecasts", "scores", "checks")]
    again = run_check(cfg, T, since=T0)
    assert [db.execute(f"select count(*) from {t}").fetchone()[0] for t in ("forecasts", "scores", "checks")] == counts
    assert counts[2] == 1 and first["decision"] == again["decision"] == "retrain"
    assert first["trigger_run_id"] == again["trigger_run_id"]
    later = run_check(cfg, T + pd.Timedelta("2h"))  # the rule still fires, within the cooldown
    assert later["decision"] == "cooldown" and "cooldown" in later["reasons"][-1]
    assert later["trigger_run_id"] is None
    import mlflow

    client = mlflow.tracking.MlflowClient(env["uri"])
    run = client.search_runs([client.get_experiment_by_name("lstm-monitoring").experiment_id], "tags.monitored_model_version = 'monitored-sine-v1'")[0]
    history = client.get_metric_history(run.info.run_id, "rolling_rmse")
    assert {m.timestamp for m in history} == {int(T.timestamp() * 1000), int((T + pd.Timedelta("2h")).timestamp() * 1000)}


def test_observations_that_stopped_are_stale_with_their_age(env):
    cfg = load_config(_write(env["root"], env["frame"], "stale"))
    check = run_check(cfg, pd.Timestamp("2024-01-27 00:00"))
    assert check["decision"] == "stale_data"
    assert "last at 2024-01-25T23:00:00" in check["reasons"][0] and "1 days 01:00:00" in check["reasons"][0]


def test_new_rows_failing_validation_score_nothing_and_are_named(env):
    frame = env["frame"].copy()
    frame["load"] = frame["load"].astype(str)
    cfg = load_config(_write(env["root"], frame, "invalid"))
    run_check(cfg, T - pd.Timedelta("1D"), since=T0)
    store = store_for(cfg)
    before = (len(store.published(MODEL_NAME)), len(store.scored(MODEL_NAME, 1)))
    frame.loc[470, "load"] = "n/a?"  # file line 472, after the last check
    _write(env["root"], frame, "invalid")
    check = run_check(cfg, T)
    assert check["decision"] == "invalid_data"
    assert "line 472" in check["reasons"][0] and "load" in check["reasons"][0]
    assert (len(store.published(MODEL_NAME)), len(store.scored(MODEL_NAME, 1))) == before


def test_no_champion_is_a_decision_and_the_cli_says_it(env, capsys):
    path = _write(env["root"], env["frame"], "nochamp")
    raw = yaml.safe_load(open(path))
    raw["mlflow"]["registered_model_name"] = "never-registered"
    open(path, "w").write(yaml.safe_dump(raw))
    assert main(["monitor", "--config", path, "--as-of", T.isoformat(), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["decision"] == "no_champion" and "'never-registered' has no version with alias 'champion'" in out["reasons"][0]
    assert set(out) == {"as_of", "champion_version", "n_origins_scored", "rolling_rmse", "training_rmse", "threshold",
                        "naive_rmse", "drift_share", "drifted_columns", "decision", "reasons", "report", "check_id",
                        "interval_coverage", "interval_factors", "interval_tracking_lr", "data_faults"}  # fmt: skip


def test_published_forecasts_cli_prints_csv(env, capsys):
    path = _write(env["root"], env["frame"], "published")
    run_check(load_config(path), T, since=T0)
    capsys.readouterr()
    assert main(["forecasts", "--config", path, "--since", (T - pd.Timedelta("1h")).isoformat()]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # the champion was registered with prediction intervals (evaluation.interval_levels: 80, 95)
    assert lines[0] == "unique_id,origin,step,ds,yhat,version,alias,as_of,yhat_lo_80,yhat_hi_80,yhat_lo_95,yhat_hi_95" and len(lines) == 1 + 4
    assert all(",champion," in line for line in lines[1:])


def test_unreachable_tracking_server_fails_clearly_without_a_check_row(env, monkeypatch):
    cfg = load_config(_write(env["root"], env["frame"], "down"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(RegistryError, match=r"cannot reach MLflow at .*\(3 attempts") as err:
        run_check(cfg, T, since=T0)
    assert "--no-register" not in str(err.value)  # a training-only option is no advice to monitoring
    assert store_for(cfg).last_checks(MODEL_NAME, 5) == []


def test_mlflow_failing_mid_check_is_a_registry_error_naming_the_request_without_a_check_row(env, monkeypatch):
    """The server passed the health check, then fails the model download (fault injected into MLflow's loader)."""
    import mlflow

    cfg = load_config(_write(env["root"], env["frame"], "midway"))

    def unavailable(uri, *args, **kwargs):
        raise mlflow.exceptions.MlflowException(f"503 while downloading {uri}", error_code="TEMPORARILY_UNAVAILABLE")

    monkeypatch.setattr(mlflow.pyfunc, "load_model", unavailable)
    with pytest.raises(RegistryError, match=r"MLflow failed to load models:/monitored-sine/1: 503"):
        run_check(cfg, T, since=T0)
    assert store_for(cfg).last_checks(MODEL_NAME, 5) == []


def test_a_champion_without_reference_sample_is_a_clear_error(env, capsys):
    """A version registered before reference samples existed: the check names it and the fix."""
    old = env["root"] / "artifacts" / "old-version"
    shutil.copytree(env["root"] / "artifacts" / "train-t0", old)
    (old / "features" / "reference.parquet").unlink()
    (old / "run.json").unlink(missing_ok=True)  # a copied run folder is a new run: unbind it from the original's config
    path = _write(env["root"], env["frame"], "oldref")
    raw = yaml.safe_load(open(path))
    raw["mlflow"]["registered_model_name"] = "old-sine"
    open(path, "w").write(yaml.safe_dump(raw))
    cfg = load_config(path)
    assert register_folder(cfg, old, "x")["registered_version"] == 1
    with pytest.raises(MonitoringError, match=r"model 'old-sine' version 1 has no reference sample.*Fix: retrain"):
        run_check(cfg, T, since=T0)
    assert store_for(cfg).last_checks("old-sine", 5) == [] and store_for(cfg).published("old-sine").empty
    assert main(["monitor", "--config", path, "--as-of", T.isoformat()]) == 1
    assert "MonitoringError" in capsys.readouterr().err


def test_a_covariate_unit_change_is_a_data_fault_that_holds_the_retrain_and_is_stored(env, capsys):
    """The target x3 fires the rule (as in the test above); temp x1000 from T - 10 h is a data fault: no retrain."""
    frame = _scaled(env["frame"])
    at = T - pd.Timedelta("10h")
    frame.loc[pd.to_datetime(frame["time"]) >= at, "temp"] *= 1000
    path = _write(env["root"], frame, "unit_change")
    check = run_check(load_config(path), T, since=T0)
    assert check["decision"] == "data_fault", check["reasons"]
    assert check["trigger_run_id"] is None and check["conf"] is None and check["held_trigger"] == "rmse"
    assert check["n_origins_scored"] == 44  # the alerts' longer read is cut back: the rule saw what it always sees
    observed = pd.read_parquet(env["root"] / "artifacts" / "monitoring" / "monitored-sine_2024-01-20T16_00_00" / "observed.parquet")
    assert observed["ds"].min() == T - pd.Timedelta("2D") - pd.Timedelta("30h")  # window start - (lookback + h + max_gap) steps
    (fault,) = check["data_faults"]
    assert (fault["column"], fault["since"]) == ("temp", at.isoformat()) and "scale" in fault["kind"]
    row = store_for(load_config(path)).last_checks(MODEL_NAME, 1)[0]
    assert row["decision"] == "data_fault" and row["data_faults"][0]["column"] == "temp" and row["reasons"][0] == fault["message"]
    capsys.readouterr()
    assert main(["alerts", "--config", path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [(a["column"], a["check_id"], a["since"]) for a in out["alerts"]] == [("temp", check["check_id"], str(at.to_pydatetime()))]


def test_a_challenger_is_shadow_scored_and_holds_a_firing_rule(env):
    """Last in this module: it registers version 2 (alias challenger)."""
    cfg = load_config(_write(env["root"], env["frame"], "clean"))
    result = run_training_pipeline(cfg, env["root"] / "artifacts" / "train-t0-b", as_of=(T0 - pd.Timedelta("1h")).isoformat())
    assert result["registered_version"] == 2 and result["aliases"] == ["challenger"]
    scaled_cfg = load_config(_write(env["root"], _scaled(env["frame"]), "shadow"))
    check = run_check(scaled_cfg, T, since=T0)
    assert check["versions"] == {"champion": 1, "challenger": 2}
    assert check["decision"] == "cooldown" and "challenger v2 is still in its canary" in check["reasons"][-1]
    pairs = store_for(scaled_cfg).paired_scores(MODEL_NAME, 1, 2)
    assert len(pairs) > 0 and not np.allclose(pairs["yhat_a"], pairs["yhat_b"])
    assert set(store_for(scaled_cfg).published(MODEL_NAME, alias="challenger")["version"]) == {2}


def test_the_naive_rule_compares_the_champion_with_the_last_observed_value(env):
    cfg = load_config(_write(env["root"], env["frame"], "naive_rule", rule="naive", naive_ratio=1.0))
    check = run_check(cfg, T, since=T0)
    # recomputed independently: the stored scores of v1 and the observed y at each origin
    scored = store_for(cfg).scored(MODEL_NAME, 1, since=T - pd.Timedelta(MONITORING["window"]), until=T)
    y = env["frame"].assign(ds=pd.to_datetime(env["frame"]["time"])).set_index("ds")["load"]
    complete = scored[scored.groupby("origin")["step"].transform("size") == 4]
    naive = y.reindex(complete["origin"]).to_numpy()
    assert check["n_origins_scored"] == 44
    assert check["naive_rmse"] == pytest.approx(np.sqrt(np.mean((naive - complete["y"].to_numpy()) ** 2)))
    assert check["rolling_rmse"] == pytest.approx(np.sqrt(np.mean((complete["yhat"] - complete["y"]).to_numpy() ** 2)))
    assert check["threshold"] == pytest.approx(check["naive_rmse"])
    assert check["decision"] == ("retrain" if check["rolling_rmse"] > check["naive_rmse"] else "ok"), check["reasons"]
    assert "naive RMSE" in check["reasons"][0]


def test_under_auto_the_check_uses_the_reference_the_champion_was_tagged_with(env):
    """``monitoring.naive_model: auto`` (the default): the check reads the champion's ``monitoring.reference``
    tag. Registered against Naive only, this version is tagged ``naive``; retagged ``seasonal_naive``, the
    naive rule compares it with the value one season (24 h) before each target."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["uri"])
    assert client.get_model_version(MODEL_NAME, "1").tags["monitoring.reference"] == "naive"
    cfg = load_config(_write(env["root"], env["frame"], "auto_reference", rule="naive"))
    assert cfg.monitoring.naive_model == "auto"
    client.set_model_version_tag(MODEL_NAME, "1", "monitoring.reference", "seasonal_naive")
    try:
        check = run_check(cfg, T, since=T0)
    finally:
        client.set_model_version_tag(MODEL_NAME, "1", "monitoring.reference", "naive")
    scored = store_for(cfg).scored(MODEL_NAME, 1, since=T - pd.Timedelta(MONITORING["window"]), until=T)
    y = env["frame"].assign(ds=pd.to_datetime(env["frame"]["time"])).set_index("ds")["load"]
    complete = scored[scored.groupby("origin")["step"].transform("size") == 4]
    seasonal = y.reindex(pd.to_datetime(complete["ds"]) - pd.Timedelta("24h")).to_numpy()  # h 4 < season 24: one season back
    assert check["naive_rmse"] == pytest.approx(np.sqrt(np.mean((seasonal - complete["y"].to_numpy()) ** 2)))
    assert "seasonal_naive RMSE" in check["reasons"][0]


def test_the_check_records_rolling_coverage_of_the_published_intervals(env):
    """The champion's intervals are stored with its forecasts; the check row holds their coverage per level."""
    from pipeline.evaluation.intervals import coverage

    cfg = load_config(_write(env["root"], env["frame"], "coverage"))
    check = run_check(cfg, T, since=T0)
    store = store_for(cfg)
    assert {"yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"} <= set(store.published(MODEL_NAME).columns)
    got = check["interval_coverage"]
    assert set(got) == {"80", "95"}
    # recomputed independently from the stored bands and observations of the same window
    scored = store.scored_intervals(MODEL_NAME, 1, since=T - pd.Timedelta(MONITORING["window"]), until=T)
    for level in (80.0, 95.0):
        rows = scored[scored["level"] == level]
        assert got[f"{level:g}"] == {"level": level, **coverage(rows["y"], rows["lo"], rows["hi"])} and len(rows) > 100
    assert got["95"]["coverage"] >= got["80"]["coverage"] and got["95"]["mean_width"] > got["80"]["mean_width"]
    assert store.last_checks(MODEL_NAME, 1)[0]["interval_coverage"] == got  # recorded in the store with the check
    shifted = run_check(load_config(_write(env["root"], _scaled(env["frame"]), "coverage_scaled")), T, since=T0)
    assert shifted["interval_coverage"]["80"]["coverage"] < got["80"]["coverage"] - 0.3  # bands miss a target scaled x3


def test_published_bands_track_their_own_misses_and_a_rerun_publishes_the_same(env):
    """The quantile tracker (evaluation.interval_tracking_lr): a check publishes the champion's bands
    scaled, per level and step, by the factor of its own published bands' misses observed before the
    check's first origin. After a x3 shift every band misses, so the next check's bands are wider by
    exactly that factor. The first check saw data ending 6 hours before its T: those outcomes were
    not scored by it, and the next check counts them on its first run as on its rerun."""
    from pipeline.models.conformal import tracked_factor

    frame = _scaled(env["frame"])
    cfg = load_config(_write(env["root"], frame, "tracked"))
    lr = cfg.evaluation.interval_tracking_lr
    assert lr == 0.05  # the default
    T1 = T0 + pd.Timedelta("1D")
    lagging = env["root"] / "tracked_lagging.csv"
    frame[pd.to_datetime(frame["time"]) < T1 - pd.Timedelta("6h")].to_csv(lagging, index=False)
    first = run_check(cfg, T1, since=T0, data_path=lagging)
    assert first["interval_factors"]["champion"]["80"] == [1.0] * 4  # nothing observed before T0: the calibrated bands
    store = store_for(cfg)
    before = store.published(MODEL_NAME, until=T1)
    second = run_check(cfg, T)  # since: the first check's T1; the full data
    # recomputed from the data file and the first check's published bands (not from the score table)
    y = frame.assign(ds=pd.to_datetime(frame["time"])).set_index("ds")["load"]
    known = before[before["ds"] < T1].assign(y=lambda d: y.reindex(d["ds"]).to_numpy())
    assert (known["ds"] >= T1 - pd.Timedelta("6h")).any()  # outcomes the first check could not score
    for level in (80.0, 95.0):
        lo, hi = known[f"yhat_lo_{level:g}"], known[f"yhat_hi_{level:g}"]
        missed = ~((lo <= known["y"]) & (known["y"] <= hi))
        want = [tracked_factor(missed[known["step"] == j].to_numpy(), level, lr, known.loc[known["step"] == j, "origin"].to_numpy()) for j in range(1, 5)]
        assert second["interval_factors"]["champion"][f"{level:g}"] == pytest.approx(want)
    assert min(second["interval_factors"]["champion"]["80"]) > 1.2  # the shifted target misses nearly every band
    published = store.published(MODEL_NAME)
    width = (published["yhat_hi_80"] - published["yhat_lo_80"]).groupby([published["origin"] >= T1, published["step"]]).agg(["min", "max"])
    np.testing.assert_allclose(width["min"], width["max"], rtol=1e-9)  # absolute scores: one width per step and check
    ratio = (width.loc[True, "min"] / width.loc[False, "min"]).to_numpy()
    np.testing.assert_allclose(ratio, second["interval_factors"]["champion"]["80"], rtol=1e-9)
    assert (published["yhat_lo_95"] <= published["yhat_lo_80"]).all() and (published["yhat_hi_80"] <= published["yhat_hi_95"]).all()  # nested
    again = run_check(cfg, T, since=T1)
    assert again["interval_factors"] == second["interval_factors"]
    pd.testing.assert_frame_equal(store.published(MODEL_NAME).drop(columns="as_of"), published.drop(columns="as_of"))


def test_the_service_and_forecast_serve_the_bands_the_next_check_publishes(env, capsys, monkeypatch):
    """After a check at T1, ``lstm-pipeline serve`` and ``lstm-pipeline forecast`` return the champion's
    bands tracked as of T1: for an origin after T1 they equal the bands the next check publishes for
    that origin (real MLflow server, real forecast store), with the check's step size whatever their
    own config says. ``forecast --bands calibrated`` gives the
    registered pyfunc's own, which the x3 shift after T0 makes far narrower."""
    from fastapi.testclient import TestClient

    from pipeline.service.app import create_app

    frame = _scaled(env["frame"])
    path = _write(env["root"], frame, "served_bands")
    cfg = load_config(path)
    T1 = T0 + pd.Timedelta("1D")
    run_check(cfg, T1, since=T0)
    origin = T1 + pd.Timedelta("2h")
    history = frame[pd.to_datetime(frame["time"]) <= origin]
    history.to_csv(env["root"] / "served_history.csv", index=False)
    # the readers' config sets another step: they track with the one the check recorded
    reader = yaml.safe_load(Path(path).read_text())
    reader["evaluation"] = {**reader.get("evaluation", {}), "interval_tracking_lr": 0.3}
    path = str(env["root"] / "served_bands_reader.yaml")
    Path(path).write_text(yaml.safe_dump(reader))
    assert store_for(cfg).last_checks(MODEL_NAME, 1)[0]["interval_tracking_lr"] == cfg.evaluation.interval_tracking_lr == 0.05
    app = create_app(load_config(path), poll=False)
    app.state.reloader.poll_once()
    with TestClient(app) as client:
        resp = client.post("/forecast", json={"rows": json.loads(history.to_json(orient="records", date_format="iso"))})
    assert resp.status_code == 200, resp.text
    served = pd.DataFrame(resp.json()["forecasts"])
    assert resp.json()["routes"][0]["bands"] == "tracked" and resp.json()["routes"][0]["bands_as_of"] == T1.isoformat()
    assert main(["forecast", "--config", path, "--input", str(env["root"] / "served_history.csv"), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (cli["bands"], cli["bands_as_of"]) == ("tracked", T1.isoformat())
    assert main(["forecast", "--config", path, "--input", str(env["root"] / "served_history.csv"), "--json", "--bands", "calibrated"]) == 0
    calibrated = pd.DataFrame(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["forecast"])
    run_check(cfg, T, since=T1)
    published = store_for(cfg).published(MODEL_NAME)
    published = published[published["origin"] == origin].sort_values("step")
    assert len(published) == 4 and (published["version"] == 1).all()
    columns = ["yhat", "yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]
    for got in (served, pd.DataFrame(cli["forecast"])):
        assert got["ds"].tolist() == [t.isoformat() for t in published["ds"]]
        np.testing.assert_allclose(got[columns].to_numpy(float), published[columns].to_numpy(float), rtol=1e-5)
    widths = (served["yhat_hi_80"] - served["yhat_lo_80"]) / (calibrated["yhat_hi_80"] - calibrated["yhat_lo_80"])
    assert (widths > 1.2).all()  # the tracker widened the bands the shifted target kept missing
    # a store that cannot be read: the forecast still comes, with the calibrated bands and why
    broken = env["root"] / "not_a_store.db"
    broken.write_bytes(b"not a database " * 100)
    monkeypatch.setenv("LSTM_PIPELINE_STORE_URL", f"sqlite:///{broken}")
    assert main(["forecast", "--config", path, "--input", str(env["root"] / "served_history.csv"), "--json"]) == 0
    fallback = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert fallback["bands"] == "calibrated" and "the forecast store could not be read" in fallback["bands_warning"]
    np.testing.assert_allclose(pd.DataFrame(fallback["forecast"])[columns].to_numpy(float), calibrated[columns].to_numpy(float))
