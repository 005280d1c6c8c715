"""Run the project's Airflow DAGs locally: an SQLite metadata database and ``dag.test()``.

Used by ``make demo``, ``make airflow`` and the DAG tests. Every Airflow command runs in
a subprocess whose environment points ``AIRFLOW_HOME`` at the given folder, so
importing this module configures nothing (Airflow reads its config at import time).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.artifacts import AIRFLOW_DB

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"


def airflow_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a local Airflow: ``home`` holds ``airflow.db``; project DAGs only."""
    home = Path(home).resolve()
    env = {
        # MLflow's artifact download bars go to a task's stderr, which Airflow logs at level error
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_DB.at(home)}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        # `airflow standalone` starts its components as `airflow ...` found on PATH
        "PATH": os.pathsep.join(filter(None, [str(Path(sys.executable).parent), os.environ.get("PATH")])),
    }
    env.update(extra or {})
    return env


def _airflow(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("airflow")
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, check=False)


def init_airflow(home: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """``airflow db migrate`` and the ``gpu`` pool (1 slot: two trainings never share a GPU)."""
    env = env or airflow_env(home)
    Path(home).mkdir(parents=True, exist_ok=True)
    for args in (["db", "migrate"], ["pools", "set", "gpu", "1", "one LSTM training at a time"]):
        proc = _airflow(args, env)
        if proc.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return env


_DAG_TEST = textwrap.dedent(
    """
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("dagfile", sys.argv[1])
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    dag = [v for v in vars(mod).values() if type(v).__name__ == "DAG" and v.dag_id == sys.argv[2]][0]
    dr = dag.test(run_conf=json.loads(sys.argv[3]))
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    with create_session() as s:
        tis = s.query(TaskInstance).filter(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dr.run_id).all()
        states = {ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state) for ti in tis}
    print("DAG_TEST_RESULT " + json.dumps({"run_id": dr.run_id, "state": str(dr.state), "tasks": states}))
    """
)


_RUNNING = re.compile(r"\[DAG TEST\] running task <TaskInstance: [\w.-]+?\.(\w+) ")
#: a pipeline log line in a task log: ``[info     ] <message>   [pipeline.training.lstm] ...`` (any module depth)
_OURS = re.compile(r"\[(info|warning|error)\s*\] (.*?)\s+\[pipeline(?:\.\w+)+\]")
_STATE = re.compile(r"new_state=(\w+)")


def _progress_line(line: str) -> str | None:
    """A one-line summary of a dag.test log line worth showing live, else None."""
    if m := _RUNNING.search(line):
        return f"task {m.group(1)} ..."
    if m := _OURS.search(line):
        return f"    {m.group(2)}"
    if "Task instance state updated" in line and (m := _STATE.search(line)):
        return f"    -> {m.group(1)}"
    return None


def run_dag_test(
    dag_id: str, conf: dict[str, Any], env: dict[str, str], dag_file: Path | None = None,
    timeout: int = 1800, echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``dag.test(run_conf=conf)`` in a subprocess; returns ``{"run_id", "state", "tasks", "log"}``.

    ``echo`` receives a short line for each task start, pipeline log line and state change.
    """
    dag_file = dag_file or DAGS / f"{dag_id}.py"
    cmd = [sys.executable, "-c", _DAG_TEST, str(dag_file), dag_id, json.dumps(conf)]
    lines: list[str] = []
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.append(line)
                if echo and (short := _progress_line(line)):
                    echo(short)
        finally:
            timer.cancel()
    out = "".join(lines)
    result = [ln for ln in lines if ln.startswith("DAG_TEST_RESULT ")]
    if not result:
        raise RuntimeError(f"dag.test for {dag_id} did not finish (exit {proc.returncode}):\n{out[-6000:]}")
    return {**json.loads(result[-1][len("DAG_TEST_RESULT ") :]), "log": out}


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports free on ``host`` now (the OS's choices for port 0, held together while chosen)."""
    import socket
    from contextlib import ExitStack

    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]


def standalone_command(home: Path, host: str = "127.0.0.1", port: int = 8080, extra: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Command and environment of ``airflow standalone`` on ``host:port`` over the project's ``dags/``.

    Initialises the metadata database and the ``gpu`` pool first. Every local user is an
    admin (simple auth manager), which is fine on loopback only. The worker's and the
    triggerer's log servers get free ports (Airflow's fixed 8793 and 8794 would collide with
    another Airflow on the machine, or a second standalone) unless ``extra`` names them.
    """
    worker_logs, trigger_logs = free_ports(2, host)
    env = init_airflow(home, airflow_env(home, {
        "AIRFLOW__API__HOST": host, "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__BASE_URL": f"http://{host}:{port}",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(worker_logs),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_logs), **(extra or {}),
    }))  # fmt: skip
    return [str(Path(sys.executable).with_name("airflow")), "standalone"], env


def standalone(home: Path, host: str = "127.0.0.1", port: int = 8080) -> int:
    """``make airflow``: run ``airflow standalone`` in the foreground (Ctrl-C stops it)."""
    cmd, env = standalone_command(home, host, port)
    print(f"Airflow UI: http://{host}:{port}  (AIRFLOW_HOME={home}, DAGs from {DAGS})")
    print("Unpause 'lstm_training' or trigger it; results land in the MLflow registry (make mlflow-ui).")
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":  # python -m tools.airflow_local [HOST] [PORT]
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8080
    sys.exit(standalone(ROOT / ".airflow", host, port))
