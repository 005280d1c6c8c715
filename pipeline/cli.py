"""``lstm-pipeline``: the pipeline's command line.

Exit codes: 0 success; 1 a data, training or registry error (message on stderr, no
traceback); 2 a usage or config error; 3 an internal error (a bug: rerun with ``-v`` for
the traceback); 130 interrupted (Ctrl-C); 141 stdout was closed early (``| head``), quietly.
With ``--json`` the last line of stdout is always one JSON object: the result, or
``{"error", "kind", "stage", "message", "run_id", "run_dir", "resume"}`` on failure.
Every subcommand goes through the same handler (:func:`main`).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError, PipelineError
from pipeline.core.progress import show_plain_lines

#: a run id given on the command line is a plain folder name: no path separators, no ``..``
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


#: flags that take a timestamp: checked before anything runs, so a bad one is a usage error naming the flag
TIME_FLAGS = ("as_of", "since", "until", "start", "end", "inject_at", "incident_at")
#: exit code when stdout's reader went away early (``| head``), as a shell tool killed by SIGPIPE
EXIT_PIPE_CLOSED = 141


def _plain(text: str) -> str:
    """Docstring text for a terminal: RST ``literals`` without their backticks."""
    return text.replace(":func:", "").replace("`", "")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstm-pipeline", description=_plain(__doc__.splitlines()[0]),
        epilog=_plain(__doc__.split("\n\n", 1)[1]), formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", required=True, type=Path, help="use-case YAML under configs/")
        p.add_argument("--data", type=Path, help="CSV to use instead of data.path")
        p.add_argument("--run-id", help="run folder name under run.artifact_root (default: new for train and replay; "
                       "for validate and features, one per config and data, reused by a rerun)")
        p.add_argument("--artifact-root", type=Path, help="override run.artifact_root")
        p.add_argument("--json", action="store_true", help="print one JSON object as the last line")

    common(sub.add_parser("validate", help="validate a data file against the config's schema"))
    common(sub.add_parser("features", help="validate, then build windows and the fitted preprocessing"))
    train = sub.add_parser("train", help="validate -> features -> train -> baselines -> compare (-> register)")
    common(train)
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override training.device")
    train.add_argument("--max-epochs", type=int, help="override training.max_epochs")
    train.add_argument("--no-register", action="store_true", help="skip MLflow tracking and registration")
    train.add_argument("--as-of", help="train, validate and test on rows with ds < AS_OF only (ISO timestamp)")
    monitor = sub.add_parser("monitor", help="one monitoring check as of T: forecast, score, drift, decide")
    monitor.add_argument("--config", required=True, type=Path, help="use-case YAML under configs/")
    monitor.add_argument("--as-of", required=True, help="T: only observations with ds < T are read (ISO timestamp)")
    monitor.add_argument("--data", type=Path, help="observations CSV instead of data.path")
    monitor.add_argument("--since", help="first origin to forecast (default: the previous check's T, at most one window back)")
    monitor.add_argument("--out-dir", type=Path, help="where the check's files go (default <artifact_root>/monitoring/<check id>)")
    monitor.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    published = sub.add_parser("forecasts", help="print the published (champion) forecasts of a period as CSV (UTC; data.timezone when set)")
    published.add_argument("--config", required=True, type=Path, help="use-case YAML under configs/")
    published.add_argument("--since", help="first origin (inclusive, ISO timestamp)")
    published.add_argument("--until", help="last origin (exclusive, ISO timestamp)")
    published.add_argument("--alias", default="champion", help="alias the forecasts were issued under (default champion)")
    published.add_argument("--json", action="store_true", help="after the CSV, print one JSON object (rows, period) as the last line")
    alerts = sub.add_parser("alerts", help="print the data-fault alerts of the monitoring checks, newest first (times UTC)")
    alerts.add_argument("--config", required=True, type=Path, help="use-case YAML under configs/")
    alerts.add_argument("--since", help="only alerts of checks as of this time or later (ISO timestamp)")
    alerts.add_argument("--json", action="store_true", help="print one JSON object (the alerts) as the last line")
    _registry_parsers(sub)
    replay = sub.add_parser("replay", help="replay the monitoring loop over history with an injected fault")
    common(replay)
    replay.add_argument("--start", required=True, help="first tick T0; the initial champion is trained on ds < T0")
    replay.add_argument("--end", required=True, help="last tick T1")
    replay.add_argument("--scenario", default="none", help="a name under configs/scenarios/ or a scenario YAML file")
    replay.add_argument("--inject-at", help="when the fault starts (default: --start)")
    replay.add_argument("--incident-at", help="a fault already in the data began here: inject nothing (--scenario none), measure from here")
    replay.add_argument("--policy", default="rule", help="what triggers a retrain: never | periodic:<every> (e.g. periodic:7D) | rule (default) | oracle[:<lag>]")
    replay.add_argument("--step", help="tick step such as 1D or 6h (default: monitoring.schedule)")
    replay.add_argument("--history", help="train on this much history before T only, e.g. 180D (default: all)")
    replay.add_argument("--replay-id", help="folder name under <artifact_root>/replay/ (default: from the parameters)")
    replay.add_argument("--use-config-stores", action="store_true", help="use the config's MLflow and forecast stores")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    _user_parsers(sub)
    for action in sub._choices_actions:  # each subcommand's --help opens with what it does; -v works after it too
        page = sub.choices[action.dest]
        page.description = page.description or action.help
        page.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log at INFO level")
    return parser


def _user_parsers(sub) -> None:
    """``forecast`` (the registered model on new history), ``serve`` (the same over HTTP), ``export-onnx`` and ``init``."""
    fc = sub.add_parser("forecast", help="forecast the next h steps of a history file with the registered model")
    fc.add_argument("--config", required=True, type=Path, help="use-case YAML (names the tracking URI and the model)")
    fc.add_argument("--input", required=True, type=Path, help="history CSV (may be gzipped) or parquet, the training file's columns")
    which = fc.add_mutually_exclusive_group()
    which.add_argument("--alias", help="registry alias to use (default champion)")
    which.add_argument("--version", type=int, help="model version to use instead of an alias")
    fc.add_argument("--out", type=Path, help="write the forecasts here (.csv or .parquet; default: CSV on stdout)")
    fc.add_argument("--json", action="store_true", help="print one JSON object as the last line (the forecasts too without --out)")
    fc.add_argument("--bands", choices=("tracked", "calibrated"), default="tracked",
                    help="prediction intervals: as the monitoring loop publishes them, tracked as of its latest check (default), "
                         "or the registered model's calibrated ones")  # fmt: skip
    serve = sub.add_parser("serve", help="serve the registered champion over HTTP (POST /forecast, /health, /ready, /metrics)")
    serve.add_argument("--config", required=True, type=Path, help="use-case YAML (tracking URI, model name, the serving section)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: loopback only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--json", action="store_true", help="on a failure to start, print the error as one JSON object")
    onnx = sub.add_parser("export-onnx", help="write a registered version's network as ONNX (opset 17) beside its preprocessing JSON")
    onnx.add_argument("--config", required=True, type=Path, help="use-case YAML (names the tracking URI and the model)")
    which = onnx.add_mutually_exclusive_group()
    which.add_argument("--alias", help="registry alias to export (default champion)")
    which.add_argument("--version", type=int, help="model version to export instead of an alias")
    onnx.add_argument("--out", required=True, type=Path, help="folder to write model.onnx, preprocessing.json and export.json into")
    onnx.add_argument("--json", action="store_true", help="print one JSON object (the export manifest) as the last line")
    init = sub.add_parser("init", help="write a starter config (defaults only) from a CSV's columns and inferred freq")
    init.add_argument("--csv", required=True, type=Path, help="your data file")
    init.add_argument("--target", help="column to forecast (default: the first numeric column after the timestamp)")
    init.add_argument("--timestamp", help="timestamp column (default: the first column that parses as timestamps)")
    init.add_argument("--out", type=Path, help="config file to write (default configs/<csv name>.yaml; never overwritten)")
    init.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def _registry_parsers(sub) -> None:
    """``promote``, ``rollback``, ``registry``: operators' commands on the aliases (pipeline.loop.promotion)."""
    promote = sub.add_parser("promote", help="make a version champion (previous champion kept as previous_champion)")
    promote.add_argument("--config", required=True, type=Path, help="use-case YAML under configs/")
    promote.add_argument("--version", required=True, type=int, help="model version to promote")
    promote.add_argument("--reason", required=True, help="why (recorded on the version and in the alias events)")
    promote.add_argument("--force", action="store_true", help="promote even a version that failed the baseline gate or was rolled back")
    promote.add_argument("--as-of", help="time recorded for the move (ISO; default: now, UTC)")
    rollback = sub.add_parser("rollback", help="move champion back to previous_champion")
    rollback.add_argument("--config", required=True, type=Path, help="use-case YAML under configs/")
    rollback.add_argument("--reason", required=True, help="why (recorded on the version and in the alias events)")
    rollback.add_argument("--as-of", help="time recorded for the move (ISO; default: now, UTC)")
    registry = sub.add_parser("registry", help="versions, aliases, canary state and the last alias events")
    registry.add_argument("--config", required=True, type=Path, help="use-case YAML under configs/")
    registry.add_argument("--events", type=int, default=10, help="how many alias events to print (default 10)")
    for p in (promote, rollback, registry):
        p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def _registry_command(cfg, args) -> int:
    """``promote`` / ``rollback`` / ``registry``: an operator's time is theirs, so ``--as-of`` defaults to now."""
    from datetime import datetime

    from pipeline.loop import promotion

    as_of = getattr(args, "as_of", None) or datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
    if args.command == "registry":
        result = promotion.registry_report(cfg, args.events)
        print(promotion.format_report(result))
    else:
        move = (promotion.manual_promote(cfg, args.version, args.reason, as_of, args.force) if args.command == "promote"
                else promotion.manual_rollback(cfg, args.reason, as_of))  # fmt: skip
        result = move.as_dict()
        print(f"{move.action}: {move.model_name} aliases {move.before} -> {move.after}")
    if args.json:
        print(json.dumps(result, default=str))
    return 0


def _monitor(cfg, args) -> int:
    """``monitor``: exit 0 for every decision (a decision is not an error)."""
    from pipeline.loop.monitoring import RESULT_KEYS, run_check

    check = run_check(cfg, args.as_of, data_path=args.data, out_dir=args.out_dir, since=args.since)
    print(f"check {check['check_id']}: decision {check['decision']}")
    for reason in check["reasons"]:
        print(f"  {reason}")
    if check.get("report"):
        print(f"drift report: {check['report']['html']}")
    if args.json:
        print(json.dumps({k: check.get(k) for k in RESULT_KEYS}, default=str))
    return 0


def _forecasts(cfg, args) -> int:
    from pipeline.data.io import in_zone
    from pipeline.store.sql import store_for

    frame = store_for(cfg).published(cfg.mlflow.registered_model_name, args.since, args.until, alias=args.alias)
    for col in ("origin", "ds", "as_of"):  # the store holds UTC; shown in data.timezone (with its offset) when set
        if col in frame and cfg.data.timezone:
            frame[col] = in_zone(frame[col], cfg.data.timezone)
    frame.to_csv(sys.stdout, index=False)
    if args.json:
        print(json.dumps({"rows": len(frame), "since": args.since, "until": args.until, "alias": args.alias}))
    return 0


def _alerts(cfg, args) -> int:
    """``alerts``: the data faults the checks found (``alerts`` rows of the forecast store)."""
    from pipeline.store.sql import store_for

    name = cfg.mlflow.registered_model_name
    rows = store_for(cfg).alerts(name, since=args.since)
    if not rows:
        print(f"no data-fault alerts for {name}" + (f" in checks as of {args.since} or later" if args.since else ""))
    for r in rows:
        print(f"{r['as_of']:%Y-%m-%dT%H:%M:%S}  {r['column']} ({r['kind']}, series {r['unique_id']}) since {r['since']:%Y-%m-%dT%H:%M:%S}  [{r['check_id']}]")
        print(f"  {r['message']}")
    if args.json:
        print(json.dumps({"model_name": name, "since": args.since, "rows": len(rows), "alerts": rows}, default=str))
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data.path": args.data,
        "run.artifact_root": args.artifact_root,
        "training.device": getattr(args, "device", None),
        "training.max_epochs": getattr(args, "max_epochs", None),
    }


def _cmd_validate(cfg, run_path: Path, args) -> dict[str, Any]:
    from pipeline.data.validation import run_validation

    out = run_validation(cfg, run_path, args.data)
    print(f"valid: {out['rows']} rows, {out['series']} series, {out['gaps']} gaps; report: {out['report']}")
    return {**out, "run_dir": str(run_path)}


def _cmd_features(cfg, run_path: Path, args) -> dict[str, Any]:
    from pipeline.features.windowing import run_features

    out = _cmd_validate(cfg, run_path, args)
    feats = run_features(cfg, run_path, Path(out["data"]))
    print(f"windows: {feats['windows']}; preprocessing: {feats['features']}")
    return {**out, **feats}


def _cmd_train(cfg, run_path: Path, args) -> dict[str, Any]:
    from pipeline.runner import run_training_pipeline, summary_table

    result = run_training_pipeline(cfg, run_path, data_path=args.data, register=not args.no_register, as_of=args.as_of)
    print(summary_table(result))
    return result


def _cmd_replay(cfg, run_path: Path, args) -> dict[str, Any]:
    from pipeline.loop.replay import replay_from_args

    return replay_from_args(cfg, args)


def _forecast(cfg, args) -> int:
    """``forecast``: the registered model's next ``h`` steps for ``--input`` (:mod:`pipeline.predict`)."""
    from pipeline.predict import run_forecast

    result = run_forecast(cfg, args.input, alias=args.alias, version=args.version, out=args.out, as_records=args.json and not args.out, bands=args.bands)
    bands = {"tracked": f", bands tracked as of {result['bands_as_of']}", "calibrated": ", calibrated bands"}.get(result["bands"], "")
    if args.out:
        print(f"{result['rows']} forecast rows of {result['series']} series from {result['model']} v{result['version']}{bands} -> {args.out}", file=sys.stderr)
    elif not args.json:
        result.pop("frame").to_csv(sys.stdout, index=False)
    result.pop("frame", None)
    if args.json:
        print(json.dumps(result, default=str))
    return 0


def _serve(cfg, args) -> int:
    """``serve``: the online service (:mod:`pipeline.service.app`) until interrupted."""
    from pipeline.service.app import serve

    return serve(cfg, args.host, args.port, verbose=args.verbose)


def _export_onnx(cfg, args) -> int:
    """``export-onnx``: a registered version as ONNX plus its preprocessing (:func:`pipeline.predict.export_version_onnx`)."""
    from pipeline.predict import export_version_onnx

    result = export_version_onnx(cfg, args.out, alias=args.alias, version=args.version)
    print(f"{result['model']} v{result['version']}: {result['members']} member(s), opset {result['opset']} -> {args.out}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, default=str))
    return 0


def _init(args) -> int:
    """``init``: a defaults-only starter config from a CSV (:mod:`pipeline.data.starter`)."""
    from pipeline.data.starter import write_starter_config

    result = write_starter_config(args.csv, out=args.out, target=args.target, timestamp=args.timestamp)
    print(result["summary"])
    if args.json:
        print(json.dumps(result, default=str))
    return 0


#: commands whose run folder, without ``--run-id``, is named by their config and data (reruns reuse it)
INPUT_BOUND_COMMANDS = ("validate", "features")
COMMANDS = {"validate": _cmd_validate, "features": _cmd_features, "train": _cmd_train, "replay": _cmd_replay}
#: commands without a run folder: ``(cfg, args) -> exit code`` (``init`` has no config yet: ``(args)``)
OTHER_COMMANDS = {"monitor": _monitor, "forecasts": _forecasts, "forecast": _forecast, "alerts": _alerts,
                  "promote": _registry_command, "rollback": _registry_command, "registry": _registry_command,
                  "serve": _serve, "export-onnx": _export_onnx}  # fmt: skip


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is a plain folder name (letters, digits, ``_ . -``, at most 200, no ``..``).

    Raises:
        ConfigError: anything else (``..``, ``a/b``, an empty or hidden name), naming what is allowed.
    """
    if not RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise ConfigError(
            f"--run-id {run_id!r} is not a plain run name: expected 1-200 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit and without '..' (it names a folder under run.artifact_root)"
        )
    return run_id


def _resume_hint(args, run_id: str) -> str:
    cmd = ["lstm-pipeline", args.command, "--config", str(args.config), "--run-id", run_id]
    cmd += [f"--{k.replace('_', '-')}={v}" for k, v in (("data", args.data), ("artifact_root", args.artifact_root)) if v]
    cmd += [f"--{k.replace('_', '-')}={v}" for k in ("device", "max_epochs") if (v := getattr(args, k, None)) is not None]
    return " ".join(cmd + (["--no-register"] if getattr(args, "no_register", False) else []))


def _fail(args, code: int, kind: str, message: str, stage: str | None, run_id: str | None, run_path: Path | None) -> int:
    """Print an error (stderr; and, with ``--json``, the error object as stdout's last line)."""
    resumable = code in (1, 130) and kind != "ConfigError" and args.command == "train"  # a refused run id cannot be resumed
    resume = _resume_hint(args, run_id) if run_id and resumable else None
    print(f"error ({kind}{f', stage {stage}' if stage else ''}): {message}", file=sys.stderr)
    if resume and stage == "validate":  # nothing finished yet: the data is what needs fixing
        print(f"fix the data where the message says, then run the same command again (or resume this run: {resume})", file=sys.stderr)
    elif resume:
        print(f"finished stages are kept; resume this run with: {resume}", file=sys.stderr)
    if getattr(args, "json", False):
        payload = {"error": message.splitlines()[0] if message else kind, "kind": kind, "stage": stage, "message": message,
                   "exit_code": code, "run_id": run_id, "run_dir": str(run_path) if run_path else None, "resume": resume}  # fmt: skip
        print(json.dumps(payload, default=str))
    return code


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """argparse's own usage errors exit 2; with ``--json`` they still end in one JSON object."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code not in (0, None) and "--json" in argv:
            print(json.dumps({"error": "usage error (see stderr)", "kind": "UsageError", "stage": "usage", "exit_code": exc.code}))
        raise


def check_time_flags(args: argparse.Namespace) -> None:
    """Every timestamp flag given (``--as-of``, ``--since``, ...) parses as a timestamp.

    Raises:
        ConfigError: the first that does not, naming the flag, the value and the expected form.
    """
    import pandas as pd

    for name in TIME_FLAGS:
        value = getattr(args, name, None)
        if value is None:
            continue
        try:
            ok = pd.Timestamp(value) is not pd.NaT
        except (ValueError, TypeError, OverflowError):
            ok = False
        if not ok:
            raise ConfigError(f"--{name.replace('_', '-')} {value!r}: expected an ISO timestamp such as 2014-06-01 or 2014-06-01T06:00, found {value!r}")


def _pipe_closed() -> int:
    """stdout's reader went away (``| head``): stop quietly, as a shell tool does on SIGPIPE."""
    import os

    try:  # Python would report the failed flush of stdout at exit; point it at /dev/null instead
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_PIPE_CLOSED


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; every subcommand's errors end here (see the module docstring for the exit codes)."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    show_plain_lines()  # training/baseline/replay progress reaches a redirected stderr as plain lines (a bar on a terminal)
    where: dict[str, Any] = {"run_id": None, "run_path": None, "started": False}
    try:
        return _dispatch(args, where)
    except BrokenPipeError:
        return _pipe_closed()
    except ConfigError as err:
        if not where["started"]:  # the config, a flag or the run id: nothing ran
            return _fail(args, 2, type(err).__name__, str(err), "config", None, None)
        return _fail(args, 1, type(err).__name__, str(err), err.stage or args.command, where["run_id"], where["run_path"])
    except PipelineError as err:
        return _fail(args, 1, type(err).__name__, str(err), err.stage or args.command, where["run_id"], where["run_path"])
    except KeyboardInterrupt:
        return _fail(args, 130, "Interrupted", "interrupted", args.command, where["run_id"], where["run_path"])
    except Exception as err:  # last resort: a bug must still end in one message (and JSON), not a traceback
        if args.verbose:
            traceback.print_exc()
        hint = "" if args.verbose else "; rerun with -v for the traceback"
        return _fail(args, 3, "InternalError", f"{type(err).__name__}: {err} (a bug{hint})", args.command, where["run_id"], where["run_path"])


def _run_id(cfg, args: argparse.Namespace) -> str:
    """``--run-id``; else, for ``validate`` / ``features``, the id of their inputs
    (:func:`pipeline.core.runs.inputs_run_id`: a rerun reuses its folder); else a new id."""
    from pipeline.core import artifacts
    from pipeline.core.runs import inputs_run_id
    from pipeline.data.io import file_sha256

    if args.run_id is not None:
        return check_run_id(args.run_id)
    path = cfg.data.path
    if args.command in INPUT_BOUND_COMMANDS and (path is None or Path(path).is_file()):  # a missing file: validation names it
        return inputs_run_id(cfg, file_sha256(path))
    return artifacts.new_run_id()


def _dispatch(args: argparse.Namespace, where: dict[str, Any]) -> int:
    """Setup (config, flags, run id), then the command; ``where`` records how far it got, for :func:`main`."""
    from pipeline.core import artifacts
    from pipeline.core.config import load_config

    check_time_flags(args)
    if args.command == "init":  # no run: a ConfigError (an existing --out) is a usage error, exit 2
        return _init(args)
    if args.command in OTHER_COMMANDS:
        cfg = load_config(args.config)
        where["started"] = True
        return OTHER_COMMANDS[args.command](cfg, args)
    cfg = load_config(args.config, _overrides(args))
    run_id = where["run_id"] = _run_id(cfg, args)
    run_path = where["run_path"] = artifacts.run_dir(cfg.run.artifact_root, run_id)
    if args.command == "train":
        print(f"run id {run_id} ({run_path}); resume an interrupted run with --run-id {run_id}", file=sys.stderr)
    elif args.run_id is None and artifacts.RUN_MANIFEST.in_run(run_path).exists():
        print(f"run folder {run_path} reused: same config and data as an earlier {args.command} call", file=sys.stderr)
    where["started"] = True
    result = COMMANDS[args.command](cfg, run_path, args)
    if args.json:
        print(json.dumps({**result, "run_id": run_id}, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
