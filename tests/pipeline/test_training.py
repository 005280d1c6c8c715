import warnings

import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.core.config import load_config
from pipeline.core.errors import TrainingError
from pipeline.data.io import read_raw
from pipeline.data.validation import validate_frame
from pipeline.evaluation.comparison import forecast_metrics
from pipeline.features.windowing import build_features
from pipeline.models.baselines import StatsBaseline, resolve_baselines
from pipeline.models.lstm import LSTMForecaster, WindowTensors
from pipeline.models.network import RecurrentForecaster
from pipeline.training.lstm import _val_loss, resolve_device, train_member
from tests.conftest import FAST_MODEL, FAST_TRAINING, sine_frame


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("delta", [True, False])
def test_model_maps_windows_to_horizon(cell, delta):
    model = RecurrentForecaster(n_features=5, horizon=7, hidden_size=8, num_layers=2, dropout=0.2, cell=cell, predict_delta=delta)
    out = model(torch.randn(3, 11, 5))
    assert out.shape == (3, 7) and out.dtype == torch.float32


def test_relative_inputs_make_the_model_shift_invariant_in_the_target():
    torch.manual_seed(0)
    model = RecurrentForecaster(n_features=2, horizon=3, hidden_size=8, relative_inputs=True).eval()
    x = torch.randn(4, 10, 2)
    shifted = x.clone()
    shifted[:, :, 0] += 5.0
    torch.testing.assert_close(model(shifted), model(x) + 5.0)


def test_an_untrained_highway_leaves_the_forecast_unchanged_and_can_copy_a_seasonal_lag():
    torch.manual_seed(0)
    plain = RecurrentForecaster(n_features=2, horizon=3, hidden_size=8).eval()
    torch.manual_seed(0)
    highway = RecurrentForecaster(n_features=2, horizon=3, hidden_size=8, ar_highway=True, lookback=10).eval()
    x = torch.randn(4, 10, 2)
    torch.testing.assert_close(highway(x), plain(x))  # zero-initialised: the network's forecast as it was
    with torch.no_grad():  # head silenced, highway = "the value 5 steps before each forecast step"
        highway.head.weight.zero_()
        highway.head.bias.zero_()
        for k in range(3):
            highway.highway.weight[k, 10 - 5 + k] = 1.0
    torch.testing.assert_close(highway(x), x[:, 5:8, 0])  # the seasonal naive forecast, season 5
    shifted = x.clone()
    shifted[:, :, 0] += 5.0
    torch.testing.assert_close(highway(shifted), highway(x) + 5.0)  # still a delta on the last value
    with pytest.raises(ValueError, match="lookback"):
        RecurrentForecaster(n_features=2, horizon=3, ar_highway=True)


def test_weights_saved_before_the_highway_existed_still_load(tiny_features, tmp_path):
    cfg, fs = tiny_features
    old = cfg.model_copy(update={"model": cfg.model.model_copy(update={"ar_highway": False})})
    from pipeline.models.lstm import build_model

    lstm = LSTMForecaster.from_members([build_model(fs.prep.n_features, fs.prep.horizon, old.model)], fs.prep, model_config=old.model)
    path = lstm.save(tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    del payload["model"]["ar_highway"]  # as written before the option existed
    torch.save(payload, path)
    loaded = LSTMForecaster.load(path, fs.prep)
    assert loaded.models_[0].highway is None
    np.testing.assert_allclose(loaded.predict(fs), lstm.predict(fs), rtol=1e-6)


#: model flags -> the reference level the highway and the output are relative to
REFERENCES = {"last value": {"predict_delta": True}, "window mean": {"relative_inputs": True}, "none": {"predict_delta": False}}


def _windows(fs, starts, reference: str):
    """``z = [window - ref, 1]`` ``(n, L+1)``, ``t = y - ref`` ``(n, H)`` and ``ref`` ``(n, 1)``, written independently in numpy."""
    L, H = fs.prep.lookback, fs.prep.horizon
    x = fs.values[:, 0].astype(np.float64)[starts[:, None] + np.arange(L)]  # (n, L) scaled target inputs
    y = fs.target.astype(np.float64)[starts[:, None] + np.arange(L, L + H)]  # (n, H)
    ref = {"last value": x[:, -1:], "window mean": x.mean(axis=1, keepdims=True), "none": np.zeros((len(x), 1))}[reference]
    return np.hstack([x - ref, np.ones((len(x), 1))]), y - ref, ref


def _ridge(z, t, lam):
    penalty = lam * len(z) * np.diag(np.r_[np.ones(z.shape[1] - 1), 0.0])  # intercept not penalised
    return np.linalg.solve(z.T @ z + penalty, z.T @ t)  # (L + 1, H)


def _highway_model(cfg, fs, **flags):
    from pipeline.models.lstm import build_model

    torch.manual_seed(0)
    mc = cfg.model.model_copy(update={"ar_highway": True, **flags})
    return build_model(fs.prep.n_features, fs.prep.horizon, mc, fs.prep.lookback)


@pytest.mark.parametrize("reference", list(REFERENCES))
def test_the_least_squares_highway_starts_as_the_ridge_forecaster_with_the_best_validation_penalty(tiny_features, reference):
    from pipeline.training.lstm import RIDGE_GRID, fit_highway

    cfg, fs = tiny_features
    model = _highway_model(cfg, fs, **REFERENCES[reference])
    tensors = WindowTensors(fs, torch.device("cpu"))
    fitted = fit_highway(model, tensors, tensors.starts(fs, "train"), tensors.starts(fs, "val"))

    assert not model.head.weight.any() and not model.head.bias.any()  # the network's part starts silent
    zt, tt, _ = _windows(fs, fs.starts["train"], reference)
    zv, tv, ref_v = _windows(fs, fs.starts["val"], reference)

    def val_mse(lam):
        return float(np.mean((zv @ _ridge(zt, tt, lam) - tv) ** 2))

    assert fitted["chosen_by"] == "validation"
    assert fitted["ridge_lambda"] == min(RIDGE_GRID, key=val_mse)  # the penalty the validation windows prefer
    with torch.no_grad():
        served = model.eval()(tensors.gather(tensors.starts(fs, "val"))[0]).numpy()
    expected = zv @ _ridge(zt, tt, fitted["ridge_lambda"]) + ref_v
    np.testing.assert_allclose(served, expected, atol=2e-4)  # the model *is* that linear forecaster
    assert fitted["val_loss"] == pytest.approx(val_mse(fitted["ridge_lambda"]), rel=1e-6)


def test_the_solved_highway_keeps_float32_under_bf16_autocast(tiny_features):
    """Training on CUDA runs under bf16 autocast; the fixed linear part must not be rounded to bf16 there."""
    from pipeline.training.lstm import fit_highway

    cfg, fs = tiny_features
    model = _highway_model(cfg, fs).eval()
    tensors = WindowTensors(fs, torch.device("cpu"))
    fit_highway(model, tensors, tensors.starts(fs, "train"), tensors.starts(fs, "val"))
    x = tensors.gather(tensors.starts(fs, "val"))[0]

    class Silent(torch.nn.Module):  # oneDNN has no bf16 LSTM on this CPU; the head is zero anyway
        def forward(self, inputs):
            return torch.zeros(*inputs.shape[:2], model.head.in_features), None

    model.rnn = Silent()
    with torch.no_grad():
        exact = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # what _autocast does on CUDA, here on CPU
            mixed = model(x)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, exact, rtol=1e-6, atol=1e-6)  # bf16 would be off by ~1e-3


def test_without_validation_windows_the_penalty_is_chosen_by_leave_one_out(tiny_features):
    from pipeline.training.lstm import RIDGE_GRID, fit_highway

    cfg, fs = tiny_features
    model = _highway_model(cfg, fs)
    tensors = WindowTensors(fs, torch.device("cpu"))
    train = fs.starts["train"][:60]  # fewer windows than twice the lookback: small penalties overfit
    fitted = fit_highway(model, tensors, torch.from_numpy(train), None)
    z, t, _ = _windows(fs, train, "last value")

    def loo_mse(lam):  # brute force: refit without each window, predict it
        keep = np.ones(len(z), bool)
        errors = []
        for i in range(len(z)):
            keep[i] = False
            errors.append(z[i] @ _ridge(z[keep], t[keep], lam * len(z) / (len(z) - 1)) - t[i])
            keep[i] = True
        return float(np.mean(np.square(errors)))

    assert fitted["chosen_by"] == "leave-one-out"
    assert fitted["ridge_lambda"] == min(RIDGE_GRID, key=loo_mse) > RIDGE_GRID[0]  # not simply the smallest penalty
    assert fitted["val_loss"] == pytest.approx(loo_mse(fitted["ridge_lambda"]), rel=1e-6)


def test_a_resumed_training_keeps_its_fitted_highway_and_does_not_fit_again(tiny_features, tmp_path, monkeypatch):
    import pipeline.training.lstm as training

    cfg, fs = tiny_features
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"ar_highway": True}),
                                 "training": cfg.training.model_copy(update={"max_epochs": 3, "min_epochs": 3})})  # fmt: skip
    folder = tmp_path / "m"
    first, done = train_member(fs, cfg, folder, seed=1, device=torch.device("cpu"))
    (folder / training.CHECKPOINT).write_bytes(b"")  # lost: resume from epoch 2's .prev
    monkeypatch.setattr(training, "fit_highway", lambda *a, **k: pytest.fail("a resumed run fitted the highway again"))
    again, resumed = train_member(fs, cfg, folder, seed=1, device=torch.device("cpu"))
    assert resumed.resumed_from_epoch == 2 and resumed.highway_ridge_lambda == done.highway_ridge_lambda is not None
    torch.testing.assert_close(again.highway.weight, first.highway.weight)  # the checkpoint's map, still held fixed
    assert not again.highway.weight.requires_grad


def test_training_holds_the_least_squares_highway_and_keeps_the_linear_start_when_training_only_hurts(tiny_features, tmp_path):
    from pipeline.models.lstm import build_model
    from pipeline.training.lstm import fit_highway

    cfg, fs = tiny_features
    mc = cfg.model.model_copy(update={"ar_highway": True})
    linear = build_model(fs.prep.n_features, fs.prep.horizon, mc, fs.prep.lookback)
    tensors = WindowTensors(fs, torch.device("cpu"))
    fit_highway(linear, tensors, tensors.starts(fs, "train"), tensors.starts(fs, "val"))

    good = cfg.model_copy(update={"model": mc, "training": cfg.training.model_copy(update={"max_epochs": 4, "min_epochs": 4})})
    model, result = train_member(fs, good, tmp_path / "g", seed=1, device=torch.device("cpu"))
    assert len(result.history) == 4 and result.best_epoch >= 1  # the network improved on the linear start
    torch.testing.assert_close(model.highway.weight, linear.highway.weight)  # held fixed: the network learns the residual
    torch.testing.assert_close(model.highway.bias, linear.highway.bias)

    bad = cfg.model_copy(update={"model": mc, "training": cfg.training.model_copy(update={"learning_rate": 3.0, "max_epochs": 3, "min_epochs": 1, "patience": 2})})
    model, result = train_member(fs, bad, tmp_path / "m", seed=1, device=torch.device("cpu"))
    assert result.best_epoch == 0 and len(result.history) >= 2  # every epoch was worse than the start on validation
    assert result.start_val_loss == result.best_val_loss  # the start's score is recorded with the result
    assert all(row["val_loss"] > result.best_val_loss for row in result.history)
    x = tensors.gather(tensors.starts(fs, "test"))[0]
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), linear.eval()(x))  # the weights restored are the start's

    zeros = bad.model_copy(update={"model": mc.model_copy(update={"highway_fit": "joint"})})
    _, plain = train_member(fs, zeros, tmp_path / "z", seed=1, device=torch.device("cpu"))
    assert plain.best_epoch >= 1  # without the fit there is no epoch 0 to fall back on


def test_an_unset_batch_size_keeps_enough_steps_per_epoch_on_small_data(tiny_features, tmp_path):
    from pipeline.core.config import TrainingConfig
    from pipeline.training.lstm import resolve_batch_size

    tc = TrainingConfig()
    assert resolve_batch_size(tc, 1_500) == 46  # CO2 weekly's size: 32 steps per epoch, not 6 at 256
    assert resolve_batch_size(tc, 500) == 32 and resolve_batch_size(tc, 100_000) == 256  # the bounds
    assert resolve_batch_size(tc.model_copy(update={"batch_size": 512}), 500) == 512  # a set value is kept
    cfg, fs = tiny_features
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"batch_size": None, "max_epochs": 1, "min_epochs": 1})})
    _, result = train_member(fs, cfg, tmp_path / "m", seed=1, device=torch.device("cpu"))
    assert result.batch_size == resolve_batch_size(cfg.training, len(fs.starts["train"]))  # recorded with the result


def test_training_lowers_the_loss_and_beats_naive(tiny_features, tmp_path):
    cfg, fs = tiny_features
    lstm = LSTMForecaster(cfg, tmp_path / "ckpt", device="cpu").fit(fs)
    history = lstm.results_[0].history
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    truth = fs.targets("test")
    lstm_rmse = forecast_metrics(truth, lstm.predict(fs), 1.0)["rmse"]
    naive_rmse = forecast_metrics(truth, StatsBaseline("Naive", resolve_baselines(cfg)).fit(fs).predict(fs), 1.0)["rmse"]
    assert lstm_rmse < 0.8 * naive_rmse


def test_early_stopping_stops_and_restores_the_best_weights(tiny_features, tmp_path):
    cfg, fs = tiny_features
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"learning_rate": 0.05, "max_epochs": 60, "min_epochs": 1, "patience": 2, "lr_patience": 50})})
    model, result = train_member(fs, cfg, tmp_path / "m", seed=1, device=torch.device("cpu"))
    assert result.stopped_early and result.stop_reason == "early_stopping" and len(result.history) < 60
    assert len(result.history) - result.best_epoch == 2
    best_val = min(r["val_loss"] for r in result.history)
    assert result.best_val_loss == pytest.approx(best_val)
    assert result.history[-1]["val_loss"] > best_val  # the last epoch was worse ...
    tensors = WindowTensors(fs, torch.device("cpu"))
    returned_val = _val_loss(model, tensors, tensors.starts(fs, "val"))
    assert returned_val == pytest.approx(best_val, rel=1e-5)  # ... and the returned model is the best one


def test_a_killed_run_resumes_from_its_checkpoint_at_the_right_epoch(tiny_features, tmp_path):
    cfg, fs = tiny_features
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"max_epochs": 6, "min_epochs": 6})})

    def die_after_3(epoch, row):
        if epoch == 3:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        train_member(fs, cfg, tmp_path / "killed", seed=3, device=torch.device("cpu"), on_epoch_end=die_after_3)
    seen = []
    resumed, result = train_member(fs, cfg, tmp_path / "killed", seed=3, device=torch.device("cpu"), on_epoch_end=lambda e, r: seen.append(e))
    assert result.resumed_from_epoch == 3 and seen == [4, 5, 6]
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5, 6]
    straight, _ = train_member(fs, cfg, tmp_path / "straight", seed=3, device=torch.device("cpu"))
    for (k, a), b in zip(resumed.state_dict().items(), straight.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=f"resumed weights differ from an uninterrupted run at {k}")


def test_non_finite_loss_stops_with_a_clear_error(tiny_features, tmp_path):
    cfg, fs = tiny_features
    fs.values[fs.starts["train"][0] + 2, 1] = np.nan
    with pytest.raises(TrainingError, match=r"epoch 1: the training loss is (nan|inf).*learning rate"):
        train_member(fs, cfg, tmp_path / "nan", seed=0, device=torch.device("cpu"))
    assert list((tmp_path / "nan").iterdir()) == []  # no checkpoint of the diverged epoch


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_cuda_requested_without_gpu_is_a_clear_error_and_auto_is_silent(make_case, capsys):
    with pytest.raises(TrainingError, match="no CUDA device"):
        resolve_device("cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_device("auto").type == "cpu"
    config, _ = make_case(training=FAST_TRAINING, model=FAST_MODEL)
    code = main(["train", "--config", str(config), "--device", "cuda", "--no-register", "--run-id", "cuda"])
    assert code == 1 and "no CUDA device" in capsys.readouterr().err


def test_no_training_windows_is_a_clear_error(make_case, capsys):
    config, _ = make_case(frame=sine_frame(n=60), features={"lookback": 35, "horizon": 10}, training=FAST_TRAINING)
    code = main(["train", "--config", str(config), "--no-register", "--run-id", "short"])
    err = capsys.readouterr().err
    assert code == 1 and "DataQualityError" in err and "no train windows" in err


def test_train_cli_json_summary(make_case, capsys, tmp_path):
    config, _ = make_case(
        frame=sine_frame(n=300), features={"lookback": 24, "horizon": 4}, training=FAST_TRAINING, model=FAST_MODEL,
        baselines={"season_length": 24, "fit_window": 150, "n_jobs": 1, "models": ["Naive", "SeasonalNaive", "AutoETS"]},
    )  # fmt: skip
    assert main(["train", "--config", str(config), "--no-register", "--json", "--run-id", "cli"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    import json

    summary = json.loads(out[-1])
    for key in ("lstm_rmse", "training_rmse", "baselines", "best_baseline", "gate_passed", "run_dir"):
        assert key in summary
    assert set(summary["baselines"]) == {"Naive", "SeasonalNaive", "AutoETS"}
    run = tmp_path / "artifacts" / "cli"
    for rel in ("training/model.pt", "training/metrics.json", "training/loss_curve.png", "evaluation/forecast.png", "evaluation/gate.json", "evaluation/comparison.csv"):
        assert (run / rel).is_file(), rel
    assert "gate:" in "\n".join(out)
    evaluated = json.loads((run / "evaluation" / "metrics.json").read_text())
    for key in ("lstm_rmse", "training_rmse", "rmse_per_step", "device", "train_seconds", "n_origins", "origin_step"):
        assert key in evaluated, key
    assert evaluated["lstm_rmse"] == summary["lstm_rmse"] and summary["n_origins"] == evaluated["n_origins"] > 0
    facts = json.loads((run / "training" / "metrics.json").read_text())
    assert "lstm_rmse" not in facts  # one source: evaluation
    assert facts["stop_reason"][0] in ("early_stopping", "max_epochs") and facts["steps"][0] > 0
    assert summary["stop_reason"] == facts["stop_reason"][0] and summary["train_steps"] == facts["steps"]  # train --json says why it stopped
    assert f"LSTM training stopped by {summary['stop_reason']} after" in "\n".join(out)


@pytest.mark.gpu
def test_training_on_cuda_uses_bf16_autocast_and_matches_cpu_quality(tiny_features, tmp_path):
    cfg, fs = tiny_features
    gpu = LSTMForecaster(cfg, tmp_path / "gpu", device="cuda").fit(fs)
    assert gpu.results_[0].device.startswith("cuda")
    truth = fs.targets("test")
    naive = StatsBaseline("Naive", resolve_baselines(cfg)).fit(fs).predict(fs)
    assert forecast_metrics(truth, gpu.predict(fs), 1.0)["rmse"] < 0.8 * forecast_metrics(truth, naive, 1.0)["rmse"]


@pytest.mark.gpu
def test_cuda_falls_back_to_host_memory_when_the_matrix_does_not_fit(tiny_features, tmp_path, monkeypatch):
    import pipeline.training.lstm as training

    cfg, fs = tiny_features
    monkeypatch.setattr(training, "DEVICE_RESIDENT_SHARE", 0.0)
    tensors = training.WindowTensors(fs, torch.device("cuda"))
    assert tensors.home.type == "cpu" and tensors.values.is_pinned()
    x, y = tensors.gather(tensors.starts(fs, "train")[:8])
    assert x.device.type == "cuda" and x.shape == (8, fs.prep.lookback, fs.prep.n_features)
    np.testing.assert_array_equal(x.cpu().numpy(), fs.windows("train").batch(slice(0, 8))[0])


def test_the_highway_reads_the_last_h_rows_of_the_seasonal_lag_columns():
    """With ``seasonal_channels`` the highway's inputs are the target window then the lags of each target
    step; one weight per step makes it the seasonal naive forecast, delta on the last value kept."""
    torch.manual_seed(0)
    model = RecurrentForecaster(n_features=4, horizon=3, hidden_size=8, ar_highway=True, lookback=10, seasonal_channels=2).eval()
    assert model.highway.in_features == 10 + 3 * 2
    x = torch.randn(5, 10, 4)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        for k in range(3):  # the second lag column, row 10 - 3 + k: target step k's lag
            model.highway.weight[k, 10 + k * 2 + 1] = 1.0
    torch.testing.assert_close(model(x), x[:, 7:10, 2])
    shifted = x.clone()
    shifted[:, :, 0] += 5.0
    torch.testing.assert_close(model(shifted), x[:, 7:10, 2])  # the lags are taken minus the reference, which is added back
    relative = RecurrentForecaster(n_features=4, horizon=3, hidden_size=8, relative_inputs=True, seasonal_channels=2).eval()
    both = x.clone()
    both[:, :, :3] += 5.0  # target and its lags moved together
    torch.testing.assert_close(relative(both), relative(x) + 5.0)


def test_seasonal_lags_let_a_short_lookback_forecast_a_weekly_pattern(make_case, tmp_path):
    """Hourly data whose pattern repeats weekly (a random profile of 168 steps), lookback 24: without lags the
    window holds no step of last week's same hours; with the week's lags (derived from ``h``) it does."""
    rng = np.random.default_rng(3)
    n, profile = 168 * 8, rng.normal(0, 1, 168)
    frame = sine_frame(n=n)
    frame["load"] = 10 + profile[np.arange(n) % 168] + rng.normal(0, 0.1, n)
    rmse = {}
    for label, lags in (("off", []), ("derived", None)):
        config, _ = make_case(frame=frame, features={"lookback": 24, "horizon": 4, "seasonal_lags": lags}, model={**FAST_MODEL, "ar_highway": True},
                              training={**FAST_TRAINING, "max_epochs": 2, "min_epochs": 1, "batch_size": 128})  # fmt: skip
        cfg = load_config(config)
        fs = build_features(validate_frame(read_raw(cfg.data), cfg).frame, cfg)
        assert fs.prep.seasonal_lags == ([] if lags == [] else [24, 168])
        lstm = LSTMForecaster(cfg, tmp_path / label, device="cpu").fit(fs)
        rmse[label] = float(np.sqrt(np.mean((lstm.predict(fs, "test") - fs.targets("test")) ** 2)))
    assert rmse["derived"] < 0.3 * rmse["off"], rmse  # noise 0.1 against a profile of sd 1
    assert rmse["derived"] < 0.2, rmse
