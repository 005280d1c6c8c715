"""``make demo``: run the training DAG once, locally, on the bundled Beijing PM2.5 data.

Embedded defaults: ``AIRFLOW_HOME=.airflow`` with an SQLite metadata database
(``airflow db migrate``), MLflow tracking into ``mlflow/store`` (what ``make mlflow-ui``
serves), artifacts under ``artifacts/lstm_training__<run_id>/``. ``dag.test()`` runs every task in
one process. Usage: ``python -m tools.demo [CONFIG]``; ``LSTM_PIPELINE_AIRFLOW_HOME``
moves the Airflow home.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tools.airflow_local import ROOT, airflow_env, init_airflow, run_dag_test

TASKS = ("resolve_config", "validate_schema", "build_features", "train_lstm", "fit_baselines", "compare_to_baselines", "register_model")


def _registry_line(cfg) -> str:
    import mlflow
    from pipeline.registry.server import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(cfg))
    client = mlflow.tracking.MlflowClient()
    name = cfg.mlflow.registered_model_name
    try:
        versions = client.search_model_versions(f"name='{name}'", order_by=["version_number DESC"], max_results=5)
    except mlflow.exceptions.MlflowException:
        return f"registry: no model named {name!r} yet"
    if not versions:
        return f"registry: no versions of {name!r} yet"
    lines = [f"registry: {name} ({tracking_uri(cfg)})"]
    for v in versions:  # search results carry no aliases: read each version
        full = client.get_model_version(name, v.version)
        lines.append(f"  v{v.version}: aliases {sorted(full.aliases) or '-'}, lstm_rmse {v.tags.get('lstm_rmse')}, run {v.run_id}")
    return "\n".join(lines)


def summary(cfg, run_dir: Path, result: dict, seconds: float) -> str:
    import pandas as pd

    from pipeline.core import artifacts

    out = [
        f"DAG run {result['run_id']}: {result['state']} in {seconds:.0f} s",
        "tasks: " + ", ".join(f"{t}={result['tasks'].get(t, '?')}" for t in TASKS),
    ]
    report_path = artifacts.VALIDATION_REPORT.in_run(run_dir)
    if report_path.exists():
        report = artifacts.read_json(report_path)
        gaps = report.get("gaps") or {}
        out.append(f"rows validated: {report['rows']} ({gaps.get('runs', 0)} gaps in the target, longest {gaps.get('longest_run', 0)} steps); valid: {report['success']}")
    else:
        out.append("validation did not run to a report: see the task log below")
    facts_path = artifacts.TRAINING_FACTS.at(artifacts.step_dir(run_dir, artifacts.TRAINING))
    if facts_path.exists():
        facts = artifacts.read_json(facts_path)
        if facts.get("stop_reason"):
            out.append(f"LSTM training: stopped by {', '.join(facts['stop_reason'])} after {', '.join(map(str, facts['steps']))} "
                       f"optimiser step(s), {facts['train_seconds']:.0f} s")
    evaluation = artifacts.step_dir(run_dir, artifacts.EVALUATION)
    if artifacts.COMPARISON_TABLE.at(evaluation).exists():
        table = pd.read_csv(artifacts.COMPARISON_TABLE.at(evaluation))
        out += ["", "LSTM vs baselines on the same test windows (original units):", table.to_string(index=False, float_format=lambda v: f"{v:.3f}")]
        from pipeline.evaluation.intervals import interval_text

        out += [interval_text(label, m) for label, m in artifacts.read_json(artifacts.EVALUATION_METRICS.at(evaluation)).get("intervals", {}).items()]
        gate = artifacts.read_json(artifacts.GATE.at(evaluation))
        out += ["", f"gate: {'PASSED' if gate['passed'] else 'FAILED'} - {gate['reasons'][0]}"]
    out += [_registry_line(cfg), "", f"artifacts: {run_dir}", "MLflow UI:  make mlflow-ui   (then http://127.0.0.1:5000)", "Airflow UI: make airflow     (then http://127.0.0.1:8080)"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from pipeline.core import artifacts
    from pipeline.core.config import load_config

    argv = sys.argv[1:] if argv is None else argv
    config = Path(argv[0] if argv else ROOT / "configs" / "beijing_pm25.yaml").resolve()
    cfg = load_config(config)
    home = Path(os.environ.get("LSTM_PIPELINE_AIRFLOW_HOME", ROOT / ".airflow")).resolve()
    print(f"[demo] Airflow metadata DB: {artifacts.AIRFLOW_DB.at(home)} (airflow db migrate)", flush=True)
    env = init_airflow(home, airflow_env(home))
    print(f"[demo] running DAG lstm_training once with dag.test() on {cfg.data.path or 'a generated series'} ...", flush=True)
    t0 = time.perf_counter()
    result = run_dag_test("lstm_training", {"config_path": str(config), "reason": "make demo"}, env, echo=lambda ln: print(f"[demo] {ln}", flush=True))
    seconds = time.perf_counter() - t0
    log_path = home / "logs" / f"demo-{artifacts.safe_run_id(result['run_id'])}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(result["log"])
    run_dir = artifacts.dag_run_dir(cfg.run.artifact_root, "lstm_training", result["run_id"])
    print(summary(cfg, run_dir, result, seconds))
    print(f"full task log: {log_path}")
    return 0 if result["state"].endswith("success") else 1


if __name__ == "__main__":
    sys.exit(main())
