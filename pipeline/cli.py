"""``lstm-pipeline``: the pipeline's command line.

Exit codes: 0 success; 1 a data, training or registry error (message on stderr, no
traceback); 2 a usage or config error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from pipeline.errors import ConfigError, PipelineError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lstm-pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", required=True, type=Path, help="use-case YAML under configs/")
        p.add_argument("--data", type=Path, help="CSV to use instead of data.path")
        p.add_argument("--run-id", help="run folder name under run.artifact_root (default: new)")
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
    published = sub.add_parser("forecasts", help="print the published (champion) forecasts of a period as CSV")
    published.add_argument("--config", required=True, type=Path, help="use-case YAML under configs/")
    published.add_argument("--since", help="first origin (inclusive, ISO timestamp)")
    published.add_argument("--until", help="last origin (exclusive, ISO timestamp)")
    published.add_argument("--alias", default="champion", help="alias the forecasts were issued under (default champion)")
    return parser


def _monitor(args) -> int:
    """``monitor``: exit 0 for every decision (a decision is not an error)."""
    from pipeline.config import load_config
    from pipeline.monitoring import RESULT_KEYS, run_check

    cfg = load_config(args.config)
    check = run_check(cfg, args.as_of, data_path=args.data, out_dir=args.out_dir, since=args.since)
    print(f"check {check['check_id']}: decision {check['decision']}")
    for reason in check["reasons"]:
        print(f"  {reason}")
    if check.get("report"):
        print(f"drift report: {check['report']['html']}")
    if args.json:
        print(json.dumps({k: check.get(k) for k in RESULT_KEYS}, default=str))
    return 0


def _forecasts(args) -> int:
    from pipeline.config import load_config
    from pipeline.store import store_for

    cfg = load_config(args.config)
    frame = store_for(cfg).published(cfg.mlflow.registered_model_name, args.since, args.until, alias=args.alias)
    frame.to_csv(sys.stdout, index=False)
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data.path": args.data,
        "run.artifact_root": args.artifact_root,
        "training.device": getattr(args, "device", None),
        "training.max_epochs": getattr(args, "max_epochs", None),
    }


def _cmd_validate(cfg, run_path: Path, args) -> dict[str, Any]:
    from pipeline.validation import run_validation

    out = run_validation(cfg, run_path, args.data)
    print(f"valid: {out['rows']} rows, {out['series']} series, {out['gaps']} gaps; report: {out['report']}")
    return {**out, "run_dir": str(run_path)}


def _cmd_features(cfg, run_path: Path, args) -> dict[str, Any]:
    from pipeline.features import run_features

    out = _cmd_validate(cfg, run_path, args)
    feats = run_features(cfg, run_path, Path(out["data"]))
    print(f"windows: {feats['windows']}; preprocessing: {feats['features']}")
    return {**out, **feats}


def _cmd_train(cfg, run_path: Path, args) -> dict[str, Any]:
    from pipeline.runner import run_training_pipeline, summary_table

    result = run_training_pipeline(cfg, run_path, data_path=args.data, register=not args.no_register, as_of=args.as_of)
    print(summary_table(result))
    return result


COMMANDS = {"validate": _cmd_validate, "features": _cmd_features, "train": _cmd_train}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pipeline import artifacts
    from pipeline.config import load_config

    if args.command in ("monitor", "forecasts"):
        try:
            return (_monitor if args.command == "monitor" else _forecasts)(args)
        except ConfigError as err:
            print(f"config error: {err}", file=sys.stderr)
            return 2
        except PipelineError as err:
            print(f"error ({type(err).__name__}): {err}", file=sys.stderr)
            if getattr(args, "json", False):
                print(json.dumps({"error": type(err).__name__, "message": str(err)}))
            return 1
    try:
        cfg = load_config(args.config, _overrides(args))
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    run_path = artifacts.run_dir(cfg.run.artifact_root, args.run_id or artifacts.new_run_id())
    try:
        result = COMMANDS[args.command](cfg, run_path, args)
    except PipelineError as err:
        print(f"error ({type(err).__name__}): {err}", file=sys.stderr)
        if args.json:
            print(json.dumps({"error": type(err).__name__, "message": str(err), "run_dir": str(run_path)}))
        return 1
    if args.json:
        print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
