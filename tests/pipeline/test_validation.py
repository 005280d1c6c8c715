"""Each kind of bad input: a clear error naming column/line/timestamp, non-zero exit, nothing written outside the run folder."""

import json

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.core.config import load_config
from pipeline.core.errors import DataLoadError, SchemaValidationError
from pipeline.data.io import read_raw
from pipeline.data.validation import run_validation, validate_frame
from tests.conftest import ROOT, tiny_frame


def _validate(config):
    cfg = load_config(config)
    return validate_frame(read_raw(cfg.data), cfg)


def _cli(config, *extra, run_id="r1"):
    return main(["validate", "--config", str(config), "--run-id", run_id, *extra])


def test_shipped_beijing_file_passes_with_its_gaps():
    cfg = load_config(ROOT / "configs" / "beijing_pm25.yaml")
    report = validate_frame(read_raw(cfg.data), cfg)
    assert report.success and report.rows == 43824
    assert report.gaps["runs"] == 214 and report.gaps["longest_run"] == 155
    assert report.gaps["missing_target_values"] == 2067


def test_valid_tiny_file_cli_exit_0_and_report_in_run_folder(make_case, tmp_path, capsys):
    config, _ = make_case()
    assert _cli(config) == 0
    report = json.loads((tmp_path / "artifacts" / "r1" / "validation" / "report.json").read_text())
    assert report["success"] and report["rows"] == 120


def test_reruns_of_validate_and_features_reuse_the_folder_of_their_inputs(make_case, tmp_path, capsys):
    """Without --run-id the folder is named by the config and the data: a rerun rewrites it, other data get another."""
    config, csv = make_case()
    ids, errs = [], []
    for command in ("validate", "features", "validate", "features"):
        assert main([command, "--config", str(config), "--json"]) == 0
        out, err = capsys.readouterr()
        ids.append(json.loads(out.splitlines()[-1])["run_id"])
        errs.append(err)
    assert len(set(ids)) == 1 and ids[0].startswith("tiny-"), ids
    assert [p.name for p in (tmp_path / "artifacts").iterdir()] == [ids[0]]
    assert "reused" not in errs[0] and all(f"{ids[0]} reused: same config and data" in e for e in errs[1:]), errs
    tiny_frame(n=130).to_csv(csv, index=False)  # other data: another folder, the first one untouched
    assert main(["validate", "--config", str(config), "--json"]) == 0
    other = json.loads(capsys.readouterr().out.splitlines()[-1])["run_id"]
    assert other != ids[0] and sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == sorted([ids[0], other])


def _assert_fails(config, capsys, *needles, run_id="bad"):
    code = _cli(config, run_id=run_id)
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


def test_missing_file(make_case, tmp_path, capsys):
    config, csv = make_case()
    csv.unlink()
    _assert_fails(config, capsys, "not found", str(csv))


def test_empty_file(make_case, capsys):
    config, _ = make_case(csv_text="")
    _assert_fails(config, capsys, "empty")


def test_header_without_rows(make_case, capsys):
    config, _ = make_case(csv_text="time,load,temp,wind\n")
    _assert_fails(config, capsys, "no data rows")


@pytest.mark.parametrize("column", ["load", "time"])
def test_missing_target_or_timestamp_column(make_case, capsys, column):
    config, _ = make_case(frame=tiny_frame().drop(columns=[column]))
    _assert_fails(config, capsys, f"missing column '{column}'")


def test_non_numeric_target_names_line_and_value(make_case, capsys):
    frame = tiny_frame()
    frame["load"] = frame["load"].astype(object)
    frame.loc[7, "load"] = "12,5kW"
    config, _ = make_case(frame=frame)
    _assert_fails(config, capsys, "expect_column_values_to_match_regex", "'load'", "1 row(s)", "line 9", "12,5kW")


def test_unparseable_timestamp(make_case, capsys):
    frame = tiny_frame()
    frame.loc[3, "time"] = "yesterday-ish"
    config, _ = make_case(frame=frame)
    _assert_fails(config, capsys, "'time'", "yesterday-ish", "line 5")


def test_duplicate_timestamps(make_case, capsys):
    frame = tiny_frame()
    frame.loc[10, "time"] = frame.loc[9, "time"]
    config, _ = make_case(frame=frame)
    _assert_fails(config, capsys, "expect_column_values_to_be_unique", "'time'", "2 row(s)")


def test_out_of_order_timestamps(make_case, capsys):
    frame = tiny_frame()
    frame.loc[[20, 21], "time"] = frame.loc[[21, 20], "time"].to_numpy()
    config, _ = make_case(frame=frame)
    _assert_fails(config, capsys, "strictly_increasing", "line 23")


def test_other_frequency_than_configured(make_case, capsys):
    frame = tiny_frame()
    config, _ = make_case(frame=frame, data={"freq": "2h"})
    _assert_fails(config, capsys, "on_freq_grid", "'2h'")


def test_off_grid_timestamp_is_an_error(make_case, capsys):
    frame = tiny_frame()
    frame.loc[50, "time"] = "2024-01-03 02:30:00"
    config, _ = make_case(frame=frame)
    _assert_fails(config, capsys, "on_freq_grid", "2024-01-03 02:30:00")


def test_missing_timestamp_is_a_listed_gap_not_an_error(make_case):
    config, _ = make_case(frame=tiny_frame().drop(index=[40, 41, 42]))
    report = _validate(config)
    assert report.gaps["missing_timestamps"] == 3
    assert report.gaps["longest_runs"][0] == {"start": "2024-01-02 16:00:00", "steps": 3, "unique_id": "series_0"}
    assert report.frame["y"].isna().sum() == 3 and len(report.frame) == 120


def test_all_missing_target(make_case, capsys):
    frame = tiny_frame()
    frame["load"] = np.nan
    config, _ = make_case(frame=frame)
    _assert_fails(config, capsys, "has no values at all")


def test_too_many_missing_values(make_case, capsys):
    frame = tiny_frame()
    frame.loc[frame.index % 3 == 0, "load"] = np.nan
    config, _ = make_case(frame=frame)
    _assert_fails(config, capsys, "expect_missing_target_fraction_at_most", "40 of 120", "20.0% allowed")


def test_unseen_categorical_level_with_configured_levels(make_case, capsys):
    frame = tiny_frame()
    frame.loc[100, "wind"] = "NNW"
    config, _ = make_case(frame=frame, data={"categorical_levels": {"wind": ["N", "S", "E"]}})
    _assert_fails(config, capsys, "'wind'", "NNW", "line 102")


def test_other_delimiter(make_case, tmp_path, capsys):
    config, csv = make_case()
    csv.write_text(csv.read_text().replace(",", ";"))
    _assert_fails(config, capsys, "comma-separated", "';'")


def test_range_violation_names_line(make_case, capsys):
    frame = tiny_frame()
    frame.loc[33, "load"] = -5.0
    config, _ = make_case(frame=frame, data={"ranges": {"load": {"min": 0}}})
    _assert_fails(config, capsys, "expect_column_values_to_be_between", "line 35")


def test_unknown_config_key_exits_2(make_case, tmp_path, capsys):
    config, _ = make_case(features={"windowz": 3})
    assert _cli(config) == 2
    assert "features.windowz" in capsys.readouterr().err


def test_failure_writes_report_only_inside_its_run_folder(make_case, tmp_path, capsys):
    frame = tiny_frame()
    frame.loc[3, "time"] = "not a time"
    config, csv = make_case(frame=frame)
    before = csv.read_bytes()
    assert _cli(config, run_id="ok-run") == 1
    assert _cli(config, run_id="bad-run") == 1
    runs = sorted(p.name for p in (tmp_path / "artifacts").iterdir())
    assert runs == ["bad-run", "ok-run"]
    report = json.loads((tmp_path / "artifacts" / "bad-run" / "validation" / "report.json").read_text())
    assert not report["success"] and report["checks"]
    assert not (tmp_path / "artifacts" / "bad-run" / "validation" / "data.parquet").exists()
    assert csv.read_bytes() == before


def test_run_validation_raises_typed_error(make_case, tmp_path):
    frame = tiny_frame().astype({"load": object})
    frame.loc[3, "load"] = "abc"
    config, _ = make_case(frame=frame)
    with pytest.raises(SchemaValidationError) as info:
        run_validation(load_config(config), tmp_path / "artifacts" / "x")
    assert info.value.failures[0]["column"] == "load"


def test_read_raw_errors_are_data_load_errors(make_case):
    config, csv = make_case(csv_text="")
    with pytest.raises(DataLoadError):
        read_raw(load_config(config).data)


def test_lookback_plus_horizon_longer_than_data(make_case, capsys):
    config, _ = make_case(frame=tiny_frame(n=30), features={"lookback": 25, "horizon": 10})
    code = main(["features", "--config", str(config), "--run-id", "short"])
    err = capsys.readouterr().err
    assert code == 1 and "DataQualityError" in err and "25" in err and "= 35 steps" in err and "only 30 steps" in err


def test_unseen_level_in_test_part_is_a_data_quality_error(make_case, capsys):
    frame = tiny_frame()
    frame.loc[115, "wind"] = "W"  # only in the test part: levels are fixed at training time
    config, _ = make_case(frame=frame)
    code = main(["features", "--config", str(config), "--run-id", "lvl"])
    err = capsys.readouterr().err
    assert code == 1 and "DataQualityError" in err
    assert "'wind'" in err and "['W']" in err and "2024-01-05 19:00:00" in err
