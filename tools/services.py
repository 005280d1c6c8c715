"""``make services``: the whole stack on loopback, with Postgres behind every store, no Docker.

Starts, each only if it is not already running:

- **Postgres 16** from the ``pgserver`` wheel (the server binaries ship in the package), data
  in ``.services/pgdata``, reached over its Unix socket in that folder; three databases:
  ``mlflow`` (MLflow's backend store), ``airflow`` (Airflow's metadata) and ``forecasts``
  (the forecast store, alias-event log and the registry's advisory locks);
- an **MLflow tracking server** on http://127.0.0.1:5000, backend store on Postgres,
  artifacts in ``.services/mlflow-artifacts`` served by the server (``--serve-artifacts``);
- **Airflow** (``airflow standalone``: API server and UI on http://127.0.0.1:8080, scheduler,
  DAG processor, triggerer) with its metadata database on Postgres and the ``LocalExecutor``,
  so ``train_lstm`` and ``fit_baselines`` run at the same time.

It writes ``.services/env`` (the variables a shell, a DAG task or ``lstm-pipeline`` needs to
use this stack: ``MLFLOW_TRACKING_URI``, ``LSTM_PIPELINE_STORE_URL``,
``LSTM_PIPELINE_LOCK_URL``) and prints the URLs. ``make services-stop`` (``stop``) stops the
servers; the data stays in ``.services/`` and the next ``make services`` picks it up.
``status`` prints what runs. Logs: ``.services/logs/``.

Usage: ``python -m tools.services start|stop|status [--root DIR] [--mlflow-port P] [--airflow-port P]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

from pipeline.core.artifacts import SERVICES_STATE

ROOT = Path(__file__).resolve().parents[1]
DATABASES = ("mlflow", "airflow", "forecasts")
STATE = SERVICES_STATE.name


def get_server(pgdata: Path, cleanup_mode: str | None, attempts: int = 4):
    """``pgserver.get_server`` with retries: it gives ``pg_ctl start`` a fixed 10 s, which a loaded
    machine can exceed; the server often finishes starting meanwhile, and the next call attaches to it."""
    import pgserver

    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" (no login session): harmless
                warnings.simplefilter("ignore")
                return pgserver.get_server(pgdata, cleanup_mode=cleanup_mode)
        except subprocess.TimeoutExpired:
            if attempt == attempts:
                raise
            time.sleep(2 * attempt)


def postgres(pgdata: Path):
    """The Postgres server of ``pgdata`` (started, or reused when it already runs); it keeps running after this process.

    Raises:
        SystemExit: ``pgserver`` is not installed (``pip install -e '.[services]'``).
    """
    try:
        import pgserver  # noqa: F401
    except ImportError as exc:  # the services extra is not installed
        raise SystemExit("pgserver is not installed: `make setup` installs it (extra 'services'), or pip install -e '.[services]'") from exc
    pgdata.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode=None)  # None: the server outlives this process
    existing = server.psql("SELECT datname FROM pg_database;")
    for name in DATABASES:
        if f" {name}\n" not in existing and f" {name} " not in existing:
            server.psql(f"CREATE DATABASE {name};")
    return server


def database_url(pgdata: Path, database: str, driver: str = "postgresql+psycopg") -> str:
    """SQLAlchemy URL of ``database`` on the socket of the server in ``pgdata`` (user ``postgres``, no password)."""
    return f"{driver}://postgres@/{database}?host={Path(pgdata).resolve()}"


def airflow_database_env(pgdata: Path, database: str = "airflow") -> dict[str, str]:
    """Airflow's metadata database on Postgres through psycopg 3, sync and async (Airflow 3's API server
    needs both; left alone, Airflow derives an ``asyncpg`` URL, a driver this project does not install)."""
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(pgdata, database),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": database_url(pgdata, database, "postgresql+psycopg_async"),
    }


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _wait(url: str, proc: subprocess.Popen, log: Path, what: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while proc.poll() is None and not _healthy(url):
        if time.time() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise SystemExit(f"{what} did not become healthy at {url} within {timeout:.0f} s (see {log}):\n{tail}")
        time.sleep(1)
    if proc.poll() is not None:  # exited: e.g. the port is taken by another server
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise SystemExit(f"{what} exited with code {proc.returncode} (is {url} taken by another process?), see {log}:\n{tail}")


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)


def client_env(root: Path, mlflow_port: int) -> dict[str, str]:
    """The variables that point the CLI, DAG tasks and tests at this stack."""
    pgdata = root / "pgdata"
    store = database_url(pgdata, "forecasts")
    return {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}", "LSTM_PIPELINE_STORE_URL": store, "LSTM_PIPELINE_LOCK_URL": store}


def start(root: Path, mlflow_port: int = 5000, airflow_port: int = 8080, airflow: bool = True, timeout: float = 300) -> dict:
    """Start what is not running; returns the state written to ``<root>/services.json``."""
    from tools.airflow_local import standalone_command

    root = root.resolve()
    state_file = root / STATE
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    pgdata = root / "pgdata"
    server = postgres(pgdata)
    state["postgres"] = {"pid": server.get_pid(), "pgdata": str(pgdata)}
    root.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent

    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    if not (_alive(state.get("mlflow", {}).get("pid")) and _healthy(mlflow_url + "/health")):
        log = root / "logs" / "mlflow.log"
        cmd = [str(bin_dir / "mlflow"), "server", "--backend-store-uri", database_url(pgdata, "mlflow"),
               "--artifacts-destination", str(root / "mlflow-artifacts"), "--serve-artifacts",
               "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "2"]  # fmt: skip
        # MLflow's job runner (GenAI jobs; unused here) keeps four or more polling processes: off unless asked for
        proc = _spawn(cmd, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "MLFLOW_TRACKING_URI": ""}, log)
        _wait(mlflow_url + "/health", proc, log, "MLflow", timeout)
        state["mlflow"] = {"pid": proc.pid, "url": mlflow_url}
        state_file.write_text(json.dumps(state, indent=2))  # recorded at once: a later failure must not orphan it

    if airflow:
        airflow_url = f"http://127.0.0.1:{airflow_port}"
        if not (_alive(state.get("airflow", {}).get("pid")) and _healthy(airflow_url + "/api/v2/monitor/health")):
            extra = {
                **airflow_database_env(pgdata),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                **client_env(root, mlflow_port),
            }
            cmd, env = standalone_command(root / "airflow", "127.0.0.1", airflow_port, extra)
            log = root / "logs" / "airflow.log"
            proc = _spawn(cmd, env, log)
            _wait(airflow_url + "/api/v2/monitor/health", proc, log, "Airflow", timeout)
            state["airflow"] = {"pid": proc.pid, "url": airflow_url}

    env_file = root / "env"
    env_file.write_text("".join(f"export {k}='{v}'\n" for k, v in client_env(root, mlflow_port).items()))
    state_file.write_text(json.dumps(state, indent=2))
    return state


def stop(root: Path, timeout: float = 60) -> list[str]:
    """Stop Airflow, MLflow and Postgres (process groups, then ``pg_ctl stop``); the data stays. Returns what was stopped."""
    root = root.resolve()
    state_file = root / STATE
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    stopped = []
    for name in ("airflow", "mlflow"):
        pid = state.get(name, {}).get("pid")
        if _alive(pid):
            os.killpg(pid, signal.SIGTERM)
            deadline = time.time() + timeout
            while time.time() < deadline:
                try:
                    os.killpg(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.5)
            else:
                os.killpg(pid, signal.SIGKILL)
            stopped.append(name)
        state.pop(name, None)
    pgdata = root / "pgdata"
    if (pgdata / "postmaster.pid").exists():
        get_server(pgdata, cleanup_mode="stop").cleanup()  # pg_ctl stop, as the server's own user
        stopped.append("postgres")
    state.pop("postgres", None)
    if state_file.exists():
        state_file.write_text(json.dumps(state, indent=2))
    return stopped


def status(root: Path) -> dict[str, str]:
    root = root.resolve()
    state = json.loads((root / STATE).read_text()) if (root / STATE).exists() else {}
    out = {"postgres": "running" if (root / "pgdata" / "postmaster.pid").exists() else "stopped"}
    for name in ("mlflow", "airflow"):
        entry = state.get(name, {})
        out[name] = f"running at {entry['url']}" if _alive(entry.get("pid")) else "stopped"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.services", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--root", type=Path, default=ROOT / ".services", help="state folder (default .services/)")
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--airflow-port", type=int, default=8080)
    parser.add_argument("--no-airflow", action="store_true", help="Postgres and MLflow only")
    args = parser.parse_args(argv)
    if args.action == "start":
        state = start(args.root, args.mlflow_port, args.airflow_port, airflow=not args.no_airflow)
        print(f"Postgres 16: {state['postgres']['pgdata']} (databases {', '.join(DATABASES)}; socket in that folder)")
        print(f"MLflow:      {state['mlflow']['url']}  (backend on Postgres, artifacts {args.root.resolve() / 'mlflow-artifacts'})")
        if "airflow" in state:
            print(f"Airflow:     {state['airflow']['url']}  (metadata on Postgres, LocalExecutor; every local user is an admin)")
        print(f"Use them:    source {args.root.resolve() / 'env'}   (MLFLOW_TRACKING_URI, LSTM_PIPELINE_STORE_URL, LSTM_PIPELINE_LOCK_URL)")
        print(f"Logs:        {args.root.resolve() / 'logs'}/   Stop: make services-stop (the data stays in {args.root})")
    elif args.action == "stop":
        stopped = stop(args.root)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}; data kept in {args.root}")
    else:
        for name, what in status(args.root).items():
            print(f"{name}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
