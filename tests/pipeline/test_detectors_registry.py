"""``monitoring.rule: cusum`` end to end against a real MLflow server: calibrated at registration,
read back from the version's tags by the check, its state carried from check to check."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import yaml

from pipeline.core.config import load_config
from pipeline.core.seasons import season_length
from pipeline.evaluation.cusum import FAST_PREFIX, CusumDetector, calibrate_from_run
from pipeline.loop.monitoring import run_check
from pipeline.runner import run_training_pipeline
from pipeline.store.sql import store_for
from tests.conftest import sine_frame, write_sine_case

pytestmark = pytest.mark.slow
MODEL_NAME = "cusum-sine"
T0 = pd.Timestamp("2024-01-17 16:00")  # row 400 of the hourly series
T = T0 + pd.Timedelta("3D")


@pytest.fixture(scope="module")
def trained(mlflow_server, tmp_path_factory):
    """One version trained as of T0 with ``monitoring.rule: cusum`` and its fast limb (``cusum_fast_shift: 1``, clip 4), registered."""
    root = tmp_path_factory.mktemp("cusum")
    raw = yaml.safe_load(write_sine_case(root, "cusum-sine", MODEL_NAME).read_text())
    sine_frame(n=600).to_csv(root / "input.csv", index=False)
    raw["monitoring"] = {"rule": "cusum", "cusum_fast_shift": 1.0, "cusum_fast_clip": 4.0, "window": "2D", "max_staleness": "1D", "store_url": f"sqlite:///{root / 'store.db'}"}
    (root / "config.yaml").write_text(yaml.safe_dump(raw))
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    try:
        cfg = load_config(root / "config.yaml")
        result = run_training_pipeline(cfg, root / "artifacts" / "train-t0", as_of=T0.isoformat())
        assert result["registered_version"] == 1, result
        yield {"cfg": cfg, "root": root, "uri": mlflow_server}
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if old is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", old)


def test_the_detector_tags_round_trip_through_the_registry(trained):
    import mlflow

    cfg, run = trained["cfg"], trained["root"] / "artifacts" / "train-t0"
    tags = mlflow.tracking.MlflowClient(trained["uri"]).get_model_version(MODEL_NAME, "1").tags
    stored = CusumDetector.from_tags(tags)
    mc = cfg.monitoring
    # monitoring.naive_model auto (the default): the sine case scores Naive only, so the reference is the last value
    assert mc.naive_model == "auto" and tags["monitoring.reference"] == stored.reference == "naive"
    assert "Naive RMSE" in tags["monitoring.reference_reason"]
    def again(shift, clip):
        return calibrate_from_run(run / "features", run / "training", stored.reference, season_length(cfg), mc.window, mc.arl0, cfg.data.freq,
                                  shift=shift, seed=cfg.run.seed, clip=clip, guarantee=mc.cusum_guarantee, limbs=2)  # fmt: skip

    assert stored.to_tags() == again(mc.cusum_shift, mc.cusum_clip).to_tags()  # deterministic under run.seed, and nothing lost in the tags
    fast = CusumDetector.from_tags(tags, FAST_PREFIX)  # the fast limb (cusum_fast_shift 1, cusum_fast_clip 4 set above)
    assert fast.to_tags(FAST_PREFIX) == again(mc.cusum_fast_shift, mc.cusum_fast_clip).to_tags(FAST_PREFIX)
    assert (stored.limbs, fast.limbs, fast.k, fast.clip, fast.arl0_origins) == (2, 2, 0.5, 4.0, 730 * 24)  # each limb at 2 x arl0
    assert stored.arl0 == "730D" and stored.arl0_origins == 730 * 24 and stored.h > 0 and stored.sd > 0
    assert stored.clip == 2.0 and stored.guarantee == 0.9 and stored.replicates > 0  # the defaults: clipped scores, guaranteed ARL0
    assert stored.mean < 0  # on the sine the LSTM beats the last value by far
    assert stored.sample == "test+train"  # 76 test origins only: the training origins were added (documented)


def test_without_a_fast_shift_a_version_gets_one_limb_and_a_refused_fast_limb_leaves_the_slow_one_alone(trained):
    """``cusum_fast_shift: null``: only ``cusum.*`` tags, the slow limb at arl0 itself, as before the fast limb."""
    import mlflow
    from pipeline.registry.registration import detector_tags
    from pipeline.registry.tracking import RunInputs

    run = trained["root"] / "artifacts" / "train-t0"
    cfg = trained["cfg"]
    cfg = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"cusum_fast_shift": None})})
    # detector_tags reads the features and training folders only
    inputs = RunInputs(validation_report=run, validated_data=run, features=run / "features", training=run / "training", evaluation=run)
    tags = detector_tags(cfg, inputs, "naive")
    assert tags and not any(k.startswith(FAST_PREFIX) for k in tags)
    one = CusumDetector.from_tags(tags)
    registered = CusumDetector.from_tags(mlflow.tracking.MlflowClient(trained["uri"]).get_model_version(MODEL_NAME, "1").tags)
    assert one.limbs == 1 and one.arl0_origins == 730 * 24 and one.h < registered.h  # alone, the slow limb keeps arl0 with a lower interval
    # a fast limb that cannot be calibrated (k 25: no in-control score gets there) leaves the slow limb, says why, and the slow
    # limb keeps the whole arl0 (calibrated as if alone: the same detector as the one-limb version's)
    from pipeline.loop.detectors import fast_limb_of

    refused = detector_tags(cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"cusum_fast_shift": 50.0})}), inputs, "naive")
    assert "no score of the calibration sample exceeds k = 25" in refused["cusum.fast_error"] and "cusum.h" in refused
    assert fast_limb_of(refused, MODEL_NAME, 1) is None and CusumDetector.from_tags(refused) == one


def test_the_check_runs_the_champions_detector_and_carries_its_state(trained, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["uri"])
    cfg = trained["cfg"]
    first = run_check(cfg, T, since=T0)
    c = first["cusum"]
    assert first["decision"] == "ok", first["reasons"]
    assert c["version"] == 1 and c["carried"] == 0.0 and c["n_new"] == first["n_origins_scored"] and not c["alarm"]
    assert "CUSUM of the champion v1's loss differential against naive" in first["reasons"][0]
    assert first["threshold"] is None
    assert c["fast"]["carried"] == 0.0 and c["fast"]["h"] > 0 and "; fast limb at" in first["reasons"][0]
    later = run_check(cfg, T + pd.Timedelta("6h"))
    assert later["cusum"]["carried"] == pytest.approx(c["statistic"]) and later["cusum"]["n_new"] == 6
    assert later["cusum"]["fast"]["carried"] == pytest.approx(c["fast"]["statistic"])
    assert pd.Timestamp(later["cusum"]["last_origin"]) == pd.Timestamp(c["last_origin"]) + pd.Timedelta("6h")
    stored = store_for(cfg).last_checks(MODEL_NAME, 1)[0]
    assert stored["cusum"] == later["cusum"]  # the state lives in the check's row


def test_a_worse_champion_signals(trained, monkeypatch):
    """The target replaced by noise from T0: the LSTM is now much worse than the last value; the CUSUM signals."""
    import numpy as np

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["uri"])
    frame = sine_frame(n=600)
    after = pd.to_datetime(frame["time"]) >= T0
    frame.loc[after, "load"] = 10 + np.cumsum(np.random.default_rng(0).normal(0, 1.0, int(after.sum())))  # a random walk: naive is optimal
    root = trained["root"]
    frame.to_csv(root / "walk.csv", index=False)
    cfg = load_config(root / "config.yaml", {"data.path": str(root / "walk.csv"), "monitoring.store_url": f"sqlite:///{root / 'walk.db'}"})
    check = run_check(cfg, T, since=T0)
    assert check["decision"] == "retrain" and check["trigger"] == "cusum", check["reasons"]
    assert check["cusum"]["max_statistic"] > check["cusum"]["h"]
