"""The replay's tick loop, its records and its summary.

The fast tests drive :func:`pipeline.loop.replay.run_replay` with small stage functions that
compute a real rolling naive-forecast RMSE on the replay's drifted data copy and keep a
registry in a dict, so the loop's logic (clock, data copy, trigger -> training run ->
canary, idempotent reruns, summary, plot) is checked in a second. The slow test runs the
real stages end to end.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError
from pipeline.data.io import read_raw
from pipeline.loop.replay import (
    Policy,
    ReplayError,
    ReplaySpec,
    Stages,
    outcome,
    parse_policy,
    published_coverage,
    rows_before_copy,
    run_replay,
    schedule_step,
    summarize,
    summary_text,
)
from pipeline.loop.scenarios import Scenario
from tests.conftest import tiny_frame

START, END, INJECT = pd.Timestamp("2024-01-05"), pd.Timestamp("2024-01-09"), pd.Timestamp("2024-01-07")
WINDOW = pd.Timedelta(hours=24)


class LoopStages:
    """Stage functions over a dict registry; ``calls`` counts every stage call."""

    def __init__(self, canary_after: int = 2):
        self.versions: dict[int, dict] = {}
        self.aliases: dict[str, int] = {}
        self.calls: list[tuple] = []
        self.canary_after = canary_after
        self.pending_ticks = 0

    def stages(self) -> Stages:
        return Stages(check=self.check, train=self.train, canary=self.canary, champion=lambda cfg: self.aliases.get("champion"), promote=self.promote)

    def promote(self, cfg, as_of, version, reason):
        self.calls.append(("promote", as_of, version))
        old = self.aliases["champion"]
        self.aliases["champion"] = version
        self.aliases.pop("challenger", None)
        return {"action": "promote", "reason": reason, "alias_move": f"champion v{old} -> v{version}", "to_version": version}

    def _rmse(self, data_path, cfg, lo, hi) -> float:
        raw = read_raw(cfg.data, data_path)
        y = pd.to_numeric(raw[cfg.data.target_column]).to_numpy()
        ds = pd.to_datetime(raw[cfg.data.timestamp_column])
        keep = ((ds >= lo) & (ds < hi)).to_numpy()[1:]
        err = (y[1:] - y[:-1])[keep]
        return float(np.sqrt(np.mean(err**2)))

    def train(self, cfg, as_of, data_path, run_path, tags):
        self.calls.append(("train", as_of, run_path.name))
        version = len(self.versions) + 1
        self.versions[version] = {"training_rmse": self._rmse(data_path, cfg, as_of - 2 * WINDOW, as_of), "tags": tags}
        self.aliases.setdefault("champion", version)
        if self.aliases["champion"] != version:
            self.aliases["challenger"] = version
            self.pending_ticks = 0
        return {"run_dir": str(run_path), "registered_version": version, "aliases": ["challenger"], "training_rmse": 1.0}

    def check(self, cfg, as_of, data_path, out_dir):
        self.calls.append(("check", as_of))
        champ = self.aliases["champion"]
        train_rmse = self.versions[champ]["training_rmse"]
        rolling = self._rmse(data_path, cfg, as_of - WINDOW, as_of)
        retrain = rolling > 2 * train_rmse and "challenger" not in self.aliases
        return {"as_of": as_of, "champion_version": champ, "n_origins_scored": 24, "rolling_rmse": rolling,
                "training_rmse": train_rmse, "threshold": 2 * train_rmse, "drift_share": 0.0,
                "decision": "retrain" if retrain else "ok", "reasons": ["rule"], "check_id": f"c{as_of:%d%H}"}  # fmt: skip

    def canary(self, cfg, as_of, data_path):
        self.calls.append(("canary", as_of))
        if "challenger" not in self.aliases:
            return {"action": None}
        self.pending_ticks += 1
        if self.pending_ticks < self.canary_after:
            return {"action": "wait", "reason": "too few paired origins"}
        self.aliases["champion"] = self.aliases.pop("challenger")
        return {"action": "promote", "reason": "significantly better", "alias_move": f"champion -> v{self.aliases['champion']}"}


@pytest.fixture
def cfg(make_case):
    frame = tiny_frame(n=10 * 24)
    config, _ = make_case(frame=frame)
    return load_config(config)


def _spec(kind="scale", inject_at=INJECT, **kw) -> ReplaySpec:
    scenario = Scenario(name=f"t_{kind}", kind=kind, factor=3.0)
    return ReplaySpec(start=START, end=END, scenario=scenario, inject_at=inject_at, step=pd.Timedelta(hours=12), **kw)


def test_loop_detects_retrains_promotes_and_records(cfg):
    loop = LoopStages()
    shipped = hashlib.sha256(cfg.data.path.read_bytes()).hexdigest()
    summary = run_replay(cfg, _spec(), stages=loop.stages(), progress=False)
    assert hashlib.sha256(cfg.data.path.read_bytes()).hexdigest() == shipped
    # initial champion trained as of START, in the replay's deterministic run id
    assert loop.calls[0][:2] == ("train", START) and loop.calls[0][2].startswith("tiny--20240105T0000--")
    checks = [c[1] for c in loop.calls if c[0] == "check"]
    assert checks == list(pd.date_range(START, END, freq="12h"))
    # the x3 fault triggers once its window holds scaled data, never before the injection
    trains = [c for c in loop.calls if c[0] == "train"][1:]
    assert len(trains) == 1 and trains[0][1] >= INJECT and trains[0][2] == f"{summary['replay_id']}--{trains[0][1]:%Y%m%dT%H%M}"
    assert summary["false_triggers"] == 0
    assert summary["detected_at"] == trains[0][1].isoformat()
    assert summary["detection_delay_h"] == (trains[0][1] - INJECT) / pd.Timedelta(hours=1)
    assert summary["registrations"] == 1 and summary["promotions"] == 1 and loop.aliases["champion"] == 2
    assert loop.versions[2]["tags"]["trigger.reason"] == "rule"  # no conf: the reasons
    timeline = pd.read_csv(summary["timeline"])
    assert len(timeline) == 9 and timeline["decision"].eq("retrain").sum() == 1
    assert set(timeline.loc[timeline["canary_action"].eq("promote"), "alias_move"]) == {"champion -> v2"}
    assert json.loads((cfg.run.artifact_root / "replay" / summary["replay_id"] / "summary.json").read_text())["promotions"] == 1
    with open(summary["plot"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_rerun_reuses_every_tick_and_other_parameters_are_refused(cfg):
    loop = LoopStages()
    first = run_replay(cfg, _spec(), stages=loop.stages(), progress=False)
    n_calls = len(loop.calls)
    again = run_replay(cfg, _spec(), stages=loop.stages(), progress=False)
    assert len(loop.calls) == n_calls  # nothing ran twice
    assert again == first
    with pytest.raises(ConfigError, match="other parameters"):
        run_replay(cfg, _spec(replay_id=first["replay_id"], extra={"note": "changed"}), stages=loop.stages(), progress=False)
    # a changed config (here a monitoring setting, as a changed default would be) does not resume the old replay's ticks
    changed = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"cooldown": "5D"})})
    with pytest.raises(ConfigError, match=r"other parameters \(\['config_fingerprint'\]\) \(the config's settings differ"):
        run_replay(changed, _spec(replay_id=first["replay_id"]), stages=loop.stages(), progress=False)
    assert len(loop.calls) == n_calls
    # a replay started before the fingerprint was recorded resumes as before (its other parameters bind it)
    manifest = cfg.run.artifact_root / "replay" / first["replay_id"] / "replay.json"
    recorded = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({k: v for k, v in recorded.items() if k != "config_fingerprint"}))
    assert run_replay(changed, _spec(replay_id=first["replay_id"]), stages=loop.stages(), progress=False) == first and len(loop.calls) == n_calls


def test_clean_scenario_counts_every_trigger_as_false(cfg):
    rows = pd.DataFrame({
        "as_of": pd.date_range("2024-01-01", periods=4, freq="D").astype(str),
        "decision": ["ok", "retrain", "ok", "retrain"], "registered_version": [None, 2, None, None],
        "canary_action": [None, None, "reject", None], "rolling_rmse": 1.0, "training_rmse": 1.0,
    })  # fmt: skip
    clean = summarize(rows, pd.Timestamp("2024-01-01"), faulty=False)
    assert clean["false_triggers"] == 2 and clean["detection_delay_h"] is None and clean["rejections"] == 1
    held = summarize(rows.assign(decision=["ok", "cooldown", "ok", "retrain"]), pd.Timestamp("2024-01-02"), faulty=True)
    assert held["alarm_delay_h"] == 0.0 and held["detection_delay_h"] == 48.0
    faulty = summarize(rows, pd.Timestamp("2024-01-02"), faulty=True)
    assert faulty["false_triggers"] == 0 and faulty["detection_delay_h"] == 0.0 and faulty["triggers"] == 2


def test_no_champion_after_initial_training_is_an_error(cfg):
    loop = LoopStages()
    stages = Stages(check=loop.check, train=lambda *a: {"registration": "skipped: gate failed"}, canary=None,
                    champion=lambda cfg: None)  # fmt: skip
    with pytest.raises(ReplayError, match="registered no champion.*gate failed"):
        run_replay(cfg, _spec(), stages=stages, progress=False)


def test_schedule_step_and_clock_errors(cfg):
    assert schedule_step("@daily") == pd.Timedelta(days=1) and schedule_step("6h") == pd.Timedelta(hours=6)
    with pytest.raises(ConfigError, match="no fixed step"):
        schedule_step("0 3 * * *")
    with pytest.raises(ReplayError, match="end after start"):
        run_replay(cfg, ReplaySpec(start=END, end=START, scenario=Scenario(name="n", kind="none"), step=pd.Timedelta("1D")),
                   stages=LoopStages().stages(), progress=False)  # fmt: skip
    with pytest.raises(ReplayError, match="at or after --start"):
        run_replay(cfg, _spec(inject_at=START - pd.Timedelta("1h")), stages=LoopStages().stages(), progress=False)


def test_rows_before_copy_is_what_training_as_of_sees(cfg, tmp_path):
    out = rows_before_copy(cfg, cfg.data.path, INJECT, tmp_path / "before.csv.gz")
    raw, before = read_raw(cfg.data), read_raw(cfg.data, out)
    assert pd.to_datetime(before["time"]).max() == INJECT - pd.Timedelta("1h")
    pd.testing.assert_frame_equal(before, raw.iloc[: len(before)])


@pytest.mark.slow
def test_replay_end_to_end_on_a_drifted_sine(tmp_path):
    """Real stages: the x3 target fault fires the rule after the injection and a challenger is registered."""
    pytest.importorskip("pipeline.loop.monitoring")
    import sqlalchemy as sa
    import yaml

    import mlflow
    from tests.conftest import FAST_MODEL, FAST_TRAINING, sine_frame, tiny_config_dict

    csv = tmp_path / "input.csv"
    sine_frame(n=20 * 24).to_csv(csv, index=False)
    raw = tiny_config_dict(csv, tmp_path / "artifacts", features={"lookback": 24, "horizon": 4}, training={**FAST_TRAINING, "num_threads": 1}, model=FAST_MODEL)
    raw["baselines"] = {"models": ["Naive"], "season_length": 24}
    raw["monitoring"] = {"window": "1D", "min_origins": 12, "cooldown": "2D", "schedule": "12h"}
    raw["canary"] = {"min_origins": 12, "max_origins": 48, "rollback_origins": 12}
    raw["mlflow"] = {"experiment_name": "replay-e2e", "registered_model_name": "replay-e2e"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "config.yaml")
    start, inject = pd.Timestamp("2024-01-13"), pd.Timestamp("2024-01-15")
    spec = ReplaySpec(start=start, end=pd.Timestamp("2024-01-18"), scenario=Scenario(name="x3", kind="scale", factor=3.0), inject_at=inject)
    summary = run_replay(cfg, spec, progress=False)

    folder = cfg.run.artifact_root / "replay" / summary["replay_id"]
    assert summary["false_triggers"] == 0 and summary["detected_at"] is not None
    assert pd.Timestamp(summary["detected_at"]) >= inject
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    versions = {int(v.version): v for v in client.search_model_versions("name='replay-e2e'")}
    assert len(versions) >= 2  # initial champion + the retrain's challenger
    retrained = versions[max(versions)]
    run = client.get_run(retrained.run_id)
    assert run.data.tags.get("trigger.as_of") == summary["detected_at"]
    # the store under the replay folder holds the checks the timeline shows
    engine = sa.create_engine(f"sqlite:///{folder / 'store.db'}")
    with engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
    assert tables, "the replay's forecast store was not created"
    timeline = pd.read_csv(summary["timeline"])
    assert timeline["decision"].eq("retrain").sum() == summary["triggers"] >= 1
    assert summary["canary_decisions"].get("wait", 0) >= 1  # the challenger was shadow-scored and judged
    # the published (tracked) bands' coverage over the replay, recomputed from the store's interval rows
    from pipeline.store.sql import ForecastStore

    store = ForecastStore(f"sqlite:///{folder / 'store.db'}")
    keys = store.published("replay-e2e")[["unique_id", "origin", "step", "version"]]
    rows = pd.concat([store.scored_intervals("replay-e2e", int(v)).assign(version=v) for v in keys["version"].unique()]).merge(keys)
    for level in (80.0, 95.0):
        part = rows[(rows["level"] == level) & rows["y"].notna()]
        inside = (part["lo"] <= part["y"]) & (part["y"] <= part["hi"])
        got = summary["coverage"][f"{level:g}"]
        assert got["n"] == len(part) > 100 and got["coverage"] == pytest.approx(inside.mean())
        before = part["origin"] < inject
        assert got["pre_fault"] == pytest.approx(inside[before].mean()) and got["post_fault"] == pytest.approx(inside[~before].mean())
    assert "published bands' coverage: 80: " in summary_text(summary)
    # the user's own registry (the config's) was never created
    assert not (tmp_path / "mlflow").exists()


def test_cli_replay_bad_options_exit_with_the_reason(cfg, capsys):
    from pipeline.cli import main

    base = ["replay", "--config", str(cfg.source), "--end", "2024-01-09"]
    assert main([*base, "--start", "last tuesday"]) == 2  # a bad flag is a usage error, checked before any work
    assert "expected an ISO timestamp" in capsys.readouterr().err
    assert main([*base, "--start", "2024-01-05", "--scenario", "no_such"]) == 1
    assert "shipped scenarios" in capsys.readouterr().err


class Recording(LoopStages):
    def train(self, cfg, as_of, data_path, run_path, tags):
        f = cfg.features
        self.calls.append(("recent", f.recent_train_steps, tags.get("recent_train_steps")))
        self.calls.append(("protocol", f.validation_tail_steps, cfg.gate.min_relative_improvement, tags.get("retrain.mode")))
        return super().train(cfg, as_of, data_path, run_path, tags)


def _scheduled(cfg):
    return cfg.model_copy(update={"retrain": cfg.retrain.model_copy(update={"mode": "scheduled"})})


def test_a_triggered_retrain_refits_through_T_the_initial_one_keeps_the_split(cfg):
    loop = Recording()
    summary = run_replay(cfg, _spec(), stages=loop.stages(), progress=False)
    protocol = [c[1:] for c in loop.calls if c[0] == "protocol"]
    # initial champion: the scheduled split and gate; the retrain: a one-day tail (24 h > 2 x h), a no-worse gate
    assert protocol == [(0, 0.05, None), (24, 0.0, "refit")]
    assert loop.versions[2]["tags"]["retrain.validation_steps"] == "24" and summary["registrations"] == 1


def test_a_triggered_retrain_trains_with_the_recent_steps_the_initial_one_without(cfg):
    cfg = _scheduled(cfg)
    on = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"retrain_recent_steps": 36})})
    loop = Recording()
    summary = run_replay(on, _spec(), stages=loop.stages(), progress=False)
    recent = [c[1:] for c in loop.calls if c[0] == "recent"]
    assert recent == [(0, None), (36, "36")]  # initial champion: plain split; the retrain: recent days in training
    assert loop.versions[2]["tags"]["recent_train_steps"] == "36" and summary["registrations"] == 1
    plain = Recording()
    run_replay(cfg, _spec(replay_id="plain"), stages=plain.stages(), progress=False)
    assert [c[1:] for c in plain.calls if c[0] == "recent"] == [(0, None), (0, None)]


# ------------------------------------------------------------------ policies


@pytest.mark.parametrize(
    ("text", "policy"),
    [("rule", Policy()), ("never", Policy("never")), ("periodic:7D", Policy("periodic", every=pd.Timedelta("7D"))),
     ("oracle", Policy("oracle")), ("oracle:12h", Policy("oracle", lag=pd.Timedelta("12h")))],
)  # fmt: skip
def test_policies_parse(text, policy):
    assert parse_policy(text) == policy
    assert parse_policy(str(policy)) == policy


@pytest.mark.parametrize("text", ["weekly", "periodic", "periodic:soon", "periodic:-1D", "never:1D", "oracle:0h"])
def test_a_bad_policy_is_refused_naming_it_and_the_choices(text):
    with pytest.raises(ReplayError, match=rf"--policy.*{text.split(':')[-1]}.*|--policy.*expected never, periodic:<every>"):
        parse_policy(text)


def test_cli_refuses_a_bad_policy_before_any_work(cfg, capsys):
    from pipeline.cli import main

    assert main(["replay", "--config", str(cfg.source), "--start", "2024-01-05", "--end", "2024-01-09", "--policy", "weekly"]) == 1
    assert "expected never, periodic:<every>" in capsys.readouterr().err
    assert not (cfg.run.artifact_root / "replay").exists()


@pytest.mark.parametrize("history", ["6months", "-5D", "0h"])
def test_cli_refuses_a_bad_history_naming_the_flag_and_the_value(cfg, capsys, history):
    from pipeline.cli import main

    args = ["replay", "--config", str(cfg.source), "--start", "2024-01-05", "--end", "2024-01-09", f"--history={history}"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"replay --history: expected a positive duration such as 365D, 12h or 2W; found {history!r}" in err and "Traceback" not in err
    assert not (cfg.run.artifact_root / "replay").exists()


def _trains(loop):
    return [c[1] for c in loop.calls if c[0] == "train"][1:]  # after the initial champion


def test_never_serves_the_initial_champion_throughout(cfg):
    loop = LoopStages()
    summary = run_replay(cfg, _spec(policy=Policy("never")), stages=loop.stages(), progress=False)
    assert _trains(loop) == [] and summary["trainings"] == 0 and summary["promotions"] == 0
    assert summary["policy"] == "never" and summary["detection_delay_h"] is not None  # the rule still fires; nothing acts on it
    assert summary["replay_id"].endswith("-never")


def test_periodic_retrains_on_its_schedule_through_the_canary(cfg):
    loop = LoopStages()
    summary = run_replay(cfg, _spec(policy=parse_policy("periodic:1D")), stages=loop.stages(), progress=False)
    assert _trains(loop) == [START + pd.Timedelta(days=d) for d in (1, 2, 3, 4)]
    assert summary["trainings"] == 4 and summary["promotions"] >= 1
    assert not any(c[0] == "promote" for c in loop.calls)  # promoted by the canary only
    assert loop.versions[2]["tags"]["replay.policy"] == "periodic:1D" and loop.versions[2]["tags"]["trigger.reason"].startswith("periodic")


def test_oracle_retrains_once_after_the_incident_and_promotes_without_a_canary(cfg):
    loop = LoopStages()
    summary = run_replay(cfg, _spec(policy=parse_policy("oracle:12h")), stages=loop.stages(), progress=False)
    assert _trains(loop) == [INJECT + pd.Timedelta("12h")]
    assert [c for c in loop.calls if c[0] == "promote"] == [("promote", INJECT + pd.Timedelta("12h"), 2)]
    assert not any(c[0] == "canary" for c in loop.calls)
    assert summary["promotions"] == 1 and summary["recovery_delay_h"] == 12.0 and loop.aliases["champion"] == 2


def test_a_recorded_incident_injects_nothing_and_is_measured_from_its_time(cfg):
    loop = LoopStages()
    clean = Scenario(name="none", kind="none")
    spec = ReplaySpec(start=START, end=END, scenario=clean, step=pd.Timedelta(hours=12), incident_at=INJECT, policy=parse_policy("oracle:1D"))
    summary = run_replay(cfg, spec, stages=loop.stages(), progress=False)
    replayed = read_raw(cfg.data, Path(summary["replay_dir"]) / "data.csv.gz")
    pd.testing.assert_frame_equal(replayed, read_raw(cfg.data))  # nothing injected
    assert summary["inject_at"] == INJECT.isoformat() and _trains(loop) == [INJECT + pd.Timedelta("1D")]
    with pytest.raises(ReplayError, match="a recorded incident injects nothing; expected --scenario none"):
        run_replay(cfg, _spec(incident_at=INJECT, replay_id="both"), stages=LoopStages().stages(), progress=False)


def test_outcome_measures_the_published_forecasts_and_judges_each_promotion():
    incident = pd.Timestamp("2024-01-10")
    origins = pd.date_range("2024-01-01", "2024-01-25", freq="D")
    rows = [{"unique_id": "s", "origin": o, "step": k, "y": 0.0, "version": 1 if o < incident else 2,
             "yhat": 1.0 if o < incident else (3.0 if o < incident + pd.Timedelta("7D") else 2.0)} for o in origins for k in (1, 2)]  # fmt: skip
    published = pd.DataFrame(rows)
    published = published[~((published["origin"] == origins[-1]) & (published["step"] == 2))]  # a partly observed origin: left out
    timeline = pd.DataFrame({
        "as_of": [incident - pd.Timedelta("1D"), incident], "champion_version": [1, 1], "canary_action": [None, "promote"],
        "promoted_version": [None, 2], "trained_run": [None, "r"], "cpu_s": [1.0, 2.0], "wall_s": [1.5, 2.5],
    })  # fmt: skip

    def paired(new, old, since, until):
        assert (new, old, since, until) == (2, 1, incident, incident + pd.Timedelta("7D"))
        return pd.DataFrame({"unique_id": "s", "origin": [incident] * 2, "step": [1, 2], "y": 0.0, "yhat_a": 3.0, "yhat_b": 1.0})

    out = outcome(timeline, incident, published, horizon=2, paired=paired, initial={"cpu_s": 10.0, "wall_s": 20.0})
    assert out["rmse_pre_fault"] == pytest.approx(1.0) and out["rmse_post_fault_settled"] == pytest.approx(2.0)
    n_post, n_settled = 15, 8  # fully observed origins from the incident; from the incident + 7 days
    assert out["rmse_post_fault"] == pytest.approx(np.sqrt((7 * 9 + n_settled * 4) / n_post))
    assert out["worse_promotions"] == 1 and out["worse_promotions_unmeasured"] == 0
    assert out["trainings"] == 1 and out["recovery_delay_h"] == 0.0 and (out["cpu_s"], out["wall_s"]) == (13.0, 24.0)


def test_published_coverage_counts_finite_bands_before_and_from_the_incident():
    incident = pd.Timestamp("2024-01-03")
    scored = pd.DataFrame({
        "origin": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]),
        "y": [0.0, 5.0, 0.0, 5.0, 0.0, 1.0],
        "yhat_lo_80": [-1.0, -1.0, -np.inf, -1.0, -1.0, -1.0],
        "yhat_hi_80": [1.0, 1.0, np.inf, 1.0, 3.0, 1.0],
    })  # fmt: skip
    got = published_coverage(scored, incident)["80"]
    assert got["n"] == 5 and got["coverage"] == pytest.approx(3 / 5) and got["mean_width"] == pytest.approx(2.4)  # the infinite band left out
    assert got["pre_fault"] == pytest.approx(1 / 2) and got["post_fault"] == pytest.approx(2 / 3)
    assert published_coverage(scored)["80"]["pre_fault"] is None
    assert published_coverage(scored.assign(yhat_lo_80=-np.inf)) == {}  # no finite band: no figure, never NaN


@pytest.mark.slow
def test_the_loop_heals_a_dynamics_change_and_never_trains_on_the_future(tmp_path):
    """Real stages, synthetic sine (noise floor 0.1): from 2024-01-23 the series runs at half speed
    (``line_slowdown``). The rule detects it, refits through T, the canary promotes, and the published
    forecasts after the fault beat the never-retrained champion's; no training saw ``ds >= T``."""
    from pipeline.loop.scenarios import load_scenario

    cfg = _slowdown_case(tmp_path, "heal")
    inject = pd.Timestamp("2024-01-23")
    out = {}
    for policy in ("never", "rule"):
        spec = ReplaySpec(start=pd.Timestamp("2024-01-21"), end=pd.Timestamp("2024-01-29"), scenario=load_scenario("line_slowdown"),
                          inject_at=inject, policy=parse_policy(policy))  # fmt: skip
        out[policy] = run_replay(cfg, spec, progress=False)
    rule, never = out["rule"], out["never"]
    assert never["trainings"] == 0 and rule["trainings"] >= 1 and rule["false_triggers"] == 0
    assert rule["detection_delay_h"] <= 24 and rule["promotions"] >= 1 and rule["worse_promotions"] == 0
    assert rule["rmse_post_fault"] < 0.9 * never["rmse_post_fault"]
    _assert_no_training_read_T_or_later(rule)


@pytest.mark.slow
def test_inherited_training_rmse_is_written_at_registration_and_read_by_the_rule(tmp_path):
    """``monitoring.inherit_training_rmse``, real stages (the slowdown case): every version a triggered
    retrain registers carries v1's training RMSE as ``inherited_training_rmse`` exactly when its own is
    higher, and the checks under such a champion hold it to the inherited one, saying so."""
    import yaml

    import mlflow
    from pipeline.loop.scenarios import load_scenario

    cfg = _slowdown_case(tmp_path, "inherit")
    raw = yaml.safe_load((tmp_path / "config.yaml").read_text())
    raw["monitoring"]["inherit_training_rmse"] = True
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "config.yaml")
    spec = ReplaySpec(start=pd.Timestamp("2024-01-21"), end=pd.Timestamp("2024-01-29"), scenario=load_scenario("line_slowdown"),
                      inject_at=pd.Timestamp("2024-01-23"), policy=parse_policy("rule"))  # fmt: skip
    summary = run_replay(cfg, spec, progress=False)
    client = mlflow.tracking.MlflowClient(tracking_uri=summary["tracking_uri"])
    tags = {int(v.version): v.tags for v in client.search_model_versions("name = 'inherit'")}
    assert len(tags) >= 2, "no retrain was registered: nothing was checked"
    v1 = float(tags[1]["training_rmse"])
    for version, t in sorted(tags.items())[1:]:
        own = float(t["training_rmse"])
        assert ("inherited_training_rmse" in t) == (own > v1), (version, t)
        if own > v1:
            assert float(t["inherited_training_rmse"]) == pytest.approx(v1, rel=1e-5) and t["inherited_from"] == "v1"
    timeline = pd.read_csv(summary["timeline"])
    for _, row in timeline.dropna(subset=["champion_version"]).iterrows():
        t = tags[int(row["champion_version"])]
        expected = float(t.get("inherited_training_rmse", t["training_rmse"]))
        assert row["training_rmse"] == pytest.approx(expected, rel=1e-5), row["as_of"]
        assert ("inherited from v1" in row["reasons"]) == ("inherited_training_rmse" in t) or row["decision"] != "ok", row["reasons"]


def _assert_no_training_read_T_or_later(summary: dict) -> pd.DataFrame:
    """Every retrain of the replay received (validate) and windowed (features) only rows with ``ds < T``; returns its rows."""
    from pipeline.core import artifacts
    from pipeline.features.windowing import load_features

    timeline = pd.read_csv(summary["timeline"])
    trained = timeline.dropna(subset=["trained_run"])
    assert len(trained), "no retrain happened: nothing was checked"
    for _, row in trained.iterrows():
        run, T = artifacts.run_dir(Path(summary["replay_dir"]) / "runs", row["trained_run"]), pd.Timestamp(row["as_of"])
        seen = pd.read_parquet(artifacts.VALIDATED_DATA.at(artifacts.step_dir(run, artifacts.VALIDATION)))
        assert seen["ds"].max() < T, f"training {row['trained_run']} read data at or after its T"
        windowed = load_features(artifacts.step_dir(run, artifacts.FEATURES)).ds
        assert windowed.max() < np.datetime64(T), f"training {row['trained_run']} windowed data at or after its T"
    return trained


def _slowdown_case(tmp_path, name: str, **retrain):
    import yaml

    from tests.conftest import FAST_MODEL, FAST_TRAINING, sine_frame, tiny_config_dict

    csv = tmp_path / "input.csv"
    sine_frame(n=29 * 24).to_csv(csv, index=False)
    raw = tiny_config_dict(csv, tmp_path / "artifacts", features={"lookback": 24, "horizon": 4}, training={**FAST_TRAINING, "num_threads": 1}, model=FAST_MODEL)
    raw["baselines"] = {"models": ["Naive"], "season_length": 24, "n_jobs": 1, "progress": False}
    raw["monitoring"] = {"window": "1D", "min_origins": 12, "cooldown": "2D", "schedule": "12h"}
    raw["canary"] = {"min_origins": 12, "max_origins": 48, "rollback_origins": 12}
    raw["mlflow"] = {"experiment_name": name, "registered_model_name": name}
    if retrain:
        raw["retrain"] = retrain
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    return load_config(tmp_path / "config.yaml")


@pytest.mark.slow
def test_a_finetune_starts_from_the_champion_it_replaces_and_never_reads_the_future(tmp_path):
    """Real stages and registry, ``retrain.mode: finetune`` on the slowdown: each retrain copies the
    champion the check scored out of the registry, keeps its preprocessing, records which version it
    started from, and neither its data nor its windows reach ``ds >= T``."""
    import mlflow
    from pipeline.core import artifacts
    from pipeline.features.windowing import load_preprocessor
    from pipeline.loop.scenarios import load_scenario

    cfg = _slowdown_case(tmp_path, "finetune", mode="finetune")
    spec = ReplaySpec(start=pd.Timestamp("2024-01-21"), end=pd.Timestamp("2024-01-26"), scenario=load_scenario("line_slowdown"),
                      inject_at=pd.Timestamp("2024-01-23"))  # fmt: skip
    summary = run_replay(cfg, spec, progress=False)
    trained = _assert_no_training_read_T_or_later(summary)
    uri = f"sqlite:///{Path(summary['replay_dir']) / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    for _, row in trained.iterrows():
        run = artifacts.run_dir(Path(summary["replay_dir"]) / "runs", row["trained_run"])
        start = artifacts.step_dir(run, artifacts.FINETUNE)
        assert artifacts.read_json(artifacts.FINETUNE_START.at(start))["version"] == row["champion_version"]
        shipped = mlflow.pyfunc.load_model(f"models:/finetune/{int(row['champion_version'])}").unwrap_python_model().prep
        kept = load_preprocessor(artifacts.step_dir(run, artifacts.FEATURES))
        assert kept.scaler_state == shipped.scaler_state == load_preprocessor(start).scaler_state
        if not pd.isna(row["registered_version"]):
            tags = client.get_run(client.get_model_version("finetune", str(int(row["registered_version"]))).run_id).data.tags
            assert tags["retrain.mode"] == "finetune" and tags["retrain.finetune_from_version"] == str(int(row["champion_version"]))
