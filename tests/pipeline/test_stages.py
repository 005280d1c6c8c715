"""pipeline.stages: the one ordered stage list, and the helpers orchestrators use to pass folders."""

from __future__ import annotations

import pytest

from pipeline import stages
from tests.conftest import FAST_MODEL, FAST_TRAINING, sine_frame


def test_stages_in_order_with_their_inputs():
    assert [s.name for s in stages.STAGES] == ["validate", "features", "train", "baselines", "compare", "register"]
    assert stages.upstream("compare") == {"features", "train", "baselines"}
    results = {"features": {"features": "/r/features"}, "train": {"training": "/r/training"}, "baselines": {"baselines": "/r/b"}}
    assert [str(p) for p in stages.stage("compare").inputs(results)] == ["/r/features", "/r/training", "/r/b"]
    assert stages.stage("register").inputs({"validate": {"rows": 3}}) == [{"rows": 3}]


def test_publish_moves_the_folder_without_dropped_parts_and_replaces_the_target(tmp_path):
    step = tmp_path / "run" / "training"
    (step / "checkpoints").mkdir(parents=True)
    (step / "model.pt").write_text("weights")
    target = tmp_path / "out" / "model"
    target.mkdir(parents=True)
    (target / "stale").write_text("old")
    stages.publish(step, target, drop=("checkpoints",))
    assert sorted(p.name for p in target.iterdir()) == ["model.pt"]
    assert not step.exists()


def test_assemble_run_folder_links_each_part_under_its_step_name(tmp_path):
    parts = {}
    for step in ("validation", "features", "training", "evaluation"):
        parts[step] = tmp_path / "kfp" / f"{step}-artifact"
        parts[step].mkdir(parents=True)
        (parts[step] / "file.txt").write_text(step)
    run = stages.assemble_run_folder(tmp_path / "run-key", parts)
    assert run.name == "run-key"
    assert {p.name: (p / "file.txt").read_text() for p in run.iterdir()} == {s: s for s in parts}


def test_assemble_run_folder_names_what_is_missing(tmp_path):
    (tmp_path / "v").mkdir()
    with pytest.raises(ValueError, match=r"missing \['features', 'training', 'evaluation'\]"):
        stages.assemble_run_folder(tmp_path / "run", {"validation": tmp_path / "v"})
    parts = {s: tmp_path / "v" for s in ("validation", "features", "training")} | {"evaluation": tmp_path / "nope"}
    with pytest.raises(ValueError, match="evaluation: expected a folder"):
        stages.assemble_run_folder(tmp_path / "run", parts)


@pytest.mark.slow
def test_runner_calls_the_stages_in_list_order(make_case, tmp_path):
    from pipeline.config import load_config
    from pipeline.runner import run_training_pipeline

    config, _ = make_case(frame=sine_frame(), features={"lookback": 24, "horizon": 4}, training=FAST_TRAINING, model=FAST_MODEL,
                          baselines={"models": ["Naive"], "season_length": 24})  # fmt: skip
    seen = []
    result = run_training_pipeline(load_config(config), tmp_path / "run", register=False, on_stage_end=lambda n, s, r: seen.append(n))
    assert seen == [s.name for s in stages.STAGES if s.name != "register"]
    assert {"gate_passed", "rows", "windows", "device", "run_dir"} <= set(result)
    assert "registered_version" not in result
