"""Every subcommand through the one error handler: bad dates, missing models, missing files, a closed pipe.

No traceback reaches the user; with ``--json`` the last line is one JSON object whose
``stage`` names where it failed. The MLflow store is a real local SQLite one (no model
registered in it), the forecast store a real SQLite file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from pipeline import cli
from pipeline.cli import main
from tests.conftest import ROOT, tiny_config_dict, tiny_frame


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A valid config and CSV whose MLflow store (SQLite beside the artifacts) has no model yet."""
    root = tmp_path_factory.mktemp("cli-errors")
    tiny_frame().to_csv(root / "input.csv", index=False)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(root / "input.csv", root / "artifacts")))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("LSTM_PIPELINE_LOCK_DIR", str(root / "locks"))
        yield {"config": str(config), "csv": str(root / "input.csv"), "root": root}


#: (subcommand, arguments after --config F, exit code, error kind or None, text the output must hold)
CASES = [
    ("validate", ["--data", "{root}/missing.csv"], 1, "DataLoadError", "data file not found"),
    ("features", ["--data", "{root}/missing.csv"], 1, "DataLoadError", "data file not found"),
    ("train", ["--as-of", "yesterday", "--no-register"], 2, "ConfigError", "--as-of 'yesterday': expected an ISO timestamp"),
    ("monitor", ["--as-of", "yesterday"], 2, "ConfigError", "--as-of 'yesterday': expected an ISO timestamp"),
    ("forecasts", ["--since", "yesterday"], 2, "ConfigError", "--since 'yesterday': expected an ISO timestamp"),
    ("forecasts", ["--until", "2024-13-45"], 2, "ConfigError", "--until '2024-13-45'"),
    ("promote", ["--version", "1", "--reason", "r", "--as-of", "soon"], 2, "ConfigError", "--as-of 'soon'"),
    ("promote", ["--version", "1", "--reason", "r"], 1, "RegistryError", "tiny-lstm"),
    ("rollback", ["--reason", "r"], 1, "RegistryError", "tiny-lstm"),
    ("registry", [], 0, None, "no version registered yet"),
    ("replay", ["--start", "nope", "--end", "2024-01-04"], 2, "ConfigError", "--start 'nope'"),
    ("forecast", ["--input", "{csv}"], 1, "RegistryError", "no model 'tiny-lstm' is registered yet"),
    ("forecast", ["--input", "{root}/missing.csv"], 1, "DataLoadError", "not found"),
    ("init", None, 1, "DataLoadError", "not found"),
    ("serve", ["--port", "70000"], 1, "ConfigError", "--port 70000: expected a TCP port"),
    ("export-onnx", ["--out", "{root}/onnx"], 1, "RegistryError", "no model 'tiny-lstm' is registered yet"),
    ("alerts", ["--since", "yesterday"], 2, "ConfigError", "--since 'yesterday': expected an ISO timestamp"),
]


def test_the_cases_cover_every_subcommand():
    assert {c[0] for c in CASES} == set(cli._parser()._subparsers._group_actions[0].choices)


@pytest.mark.parametrize(("command", "extra", "code", "kind", "text"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_message_never_a_traceback(case, capsys, command, extra, code, kind, text):
    args = ["--csv", f"{case['root']}/missing.csv"] if extra is None else ["--config", case["config"], *(a.format(**case) for a in extra)]
    assert main([command, *args, "--json"]) == code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    last = json.loads(captured.out.strip().splitlines()[-1])
    if kind is None:
        assert text in captured.out
        return
    assert last["kind"] == kind and last["exit_code"] == code and last["stage"] is not None, last
    assert text in last["message"] and f"error ({kind}" in captured.err


def test_a_bug_in_any_subcommand_is_exit_3_and_minus_v_after_the_subcommand_shows_the_traceback(case, capsys, monkeypatch):
    def bug(cfg, args):
        raise KeyError("boom")

    monkeypatch.setitem(cli.OTHER_COMMANDS, "registry", bug)
    assert main(["registry", "--config", case["config"], "--json"]) == 3
    captured = capsys.readouterr()
    err = json.loads(captured.out.strip().splitlines()[-1])
    assert err["kind"] == "InternalError" and err["stage"] == "registry" and "rerun with -v" in err["message"]
    assert "Traceback" not in captured.err
    assert main(["registry", "--config", case["config"], "-v"]) == 3  # -v after the subcommand is accepted
    shown = capsys.readouterr().err
    assert "Traceback" in shown and "KeyError: 'boom'" in shown


@pytest.mark.parametrize("command", [["forecasts"], ["registry"], ["validate"]])
def test_a_closed_pipe_ends_quietly(case, command):
    """``lstm-pipeline ... | head`` when ``head`` has gone: exit 141, nothing on stderr but the run's own lines."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte is written
    try:
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *command, "--config", case["config"]], stdout=write,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=300, env=dict(os.environ))  # fmt: skip
    finally:
        os.close(write)
    assert proc.returncode == cli.EXIT_PIPE_CLOSED, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr[-3000:]


def test_every_subcommand_help_says_what_it_does(capsys):
    for name in cli._parser()._subparsers._group_actions[0].choices:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        page = capsys.readouterr().out
        assert page.split("\n\n")[1].strip(), (name, page[:300])  # a description line under the usage
        assert "``" not in page and ":func:" not in page, (name, page)  # plain text, no RST markup
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out
