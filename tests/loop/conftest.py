"""The closed loop under the real scheduler: ``airflow standalone`` on loopback and its REST API.

Shared by the tests of ``tests/loop/``: :func:`start_airflow` starts Airflow as ``make airflow``
does (``tools.airflow_local.standalone_command``: LocalExecutor, SQLite metadata DB in a fresh
``AIRFLOW_HOME``), :class:`AirflowApi` drives it through ``/api/v2`` (simple auth, all users
admins: loopback only), and :func:`wait_for` polls without any timing assertion (a timeout
is a failure to get there, not a measurement).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from tests.conftest import _free_port, stop_process_group
from tools.airflow_local import standalone_command

FINISHED = ("success", "failed")


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, every: float = 2.0, on_timeout: Callable[[], str] | None = None
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); ``AssertionError`` after ``timeout`` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\n{on_timeout()}" if on_timeout else ""))


def iso_utc(ts) -> str:
    """A naive timestamp on the data's clock (UTC) as the aware ISO string the REST API wants."""
    return pd.Timestamp(ts).tz_localize("UTC").isoformat()


class ApiError(AssertionError):
    """The REST API answered with an HTTP error (``code``)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class AirflowApi:
    """A small client of Airflow 3's REST API (``/api/v2``) with a simple-auth token."""

    def __init__(self, base: str):
        self.base = base
        with urllib.request.urlopen(base + "/auth/token", timeout=10) as resp:  # all-admins simple auth on loopback
            self.token = json.load(resp)["access_token"]

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(
            self.base + "/api/v2" + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, f"{method} {path} -> HTTP {exc.code}: {exc.read().decode(errors='replace')[:2000]}") from exc

    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self.call("GET", "/dags")["dags"]}

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, start, end, conf: dict | None = None, run_id: str | None = None) -> str:
        """A run over the data interval ``[start, end)`` (naive UTC), as the scheduler would create; returns its run id."""
        body = {
            "logical_date": iso_utc(start),
            "data_interval_start": iso_utc(start),
            "data_interval_end": iso_utc(end),
            "conf": conf or {},
        }
        if run_id:
            body["dag_run_id"] = run_id
        return self.call("POST", f"/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def asset_events(self, **filters: str) -> list[dict]:
        """``/assets/events`` filtered by e.g. ``source_dag_id``, ``source_run_id``."""
        return self.call("GET", "/assets/events?" + urllib.parse.urlencode(filters))["asset_events"]

    def dag_run(self, dag_id: str, run_id: str) -> dict | None:
        """The run, or ``None`` when it does not exist (yet)."""
        try:
            return self.call("GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        """``{task_id: task instance}`` of one run (``state``, ``try_number``, ...)."""
        tis = self.call("GET", f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances")["task_instances"]
        return {t["task_id"]: t for t in tis}

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {task: ti["state"] for task, ti in self.task_instances(dag_id, run_id).items()}

    def rerun_task(self, dag_id: str, run_id: str, task_id: str, timeout: float) -> dict:
        """Clear one finished task of a run (as an operator does in the UI) and wait for its next try to finish.

        Returns the task instance of that try (``state``, ``try_number``).
        """
        before = self.task_instances(dag_id, run_id)[task_id]["try_number"]
        body = {"dry_run": False, "only_failed": False, "reset_dag_runs": True, "task_ids": [task_id], "dag_run_id": run_id}
        self.call("POST", f"/dags/{dag_id}/clearTaskInstances", body)

        def done():
            ti, run = self.task_instances(dag_id, run_id)[task_id], self.dag_run(dag_id, run_id)
            ended = ti["try_number"] > before and ti["state"] in ("success", "failed", "skipped") and run["state"] in FINISHED
            return ti if ended else None

        return wait_for(
            done,
            timeout,
            f"{dag_id}.{task_id} of {run_id} to run again",
            on_timeout=lambda: str(self.task_states(dag_id, run_id)),
        )

    def wait_finished(self, dag_id: str, run_id: str, timeout: float) -> dict:
        """Wait until the run is ``success`` or ``failed``; returns the run with its ``tasks`` states."""

        def done():
            run = self.dag_run(dag_id, run_id)
            return run if run and run["state"] in FINISHED else None

        run = wait_for(
            done, timeout, f"{dag_id} run {run_id} to finish", on_timeout=lambda: str(self.task_states(dag_id, run_id))
        )
        return {**run, "tasks": self.task_states(dag_id, run_id)}


def healthy(base: str) -> bool:
    """Metadata DB, scheduler and DAG processor all report healthy."""
    try:
        with urllib.request.urlopen(base + "/api/v2/monitor/health", timeout=5) as resp:
            health = json.load(resp)
        return all(health[k]["status"] == "healthy" for k in ("metadatabase", "scheduler", "dag_processor"))
    except (OSError, KeyError, ValueError):
        return False


@contextmanager
def start_airflow(home: Path, log_path: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen, str]]:
    """``airflow standalone`` (as ``make airflow``) on a free loopback port; yields ``(process, base URL)``.

    Returns at once, before Airflow is healthy (the caller can do other work meanwhile and then
    call :func:`wait_ready`); the whole process group is stopped on exit.
    """
    port = _free_port()
    cmd, full_env = standalone_command(home, "127.0.0.1", port, env)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc, f"http://127.0.0.1:{port}"
        finally:
            stop_process_group(proc)


def wait_ready(proc: subprocess.Popen, base: str, log_path: Path, dag_ids: tuple[str, ...], timeout: float = 240) -> AirflowApi:
    """Wait until Airflow is healthy and has parsed ``dag_ids``; unpause them; return the API client."""

    def tail() -> str:
        return Path(log_path).read_text(errors="replace")[-4000:]

    wait_for(lambda: healthy(base) or proc.poll() is not None, timeout, "airflow standalone to be healthy", on_timeout=tail)
    assert proc.poll() is None, f"airflow standalone exited ({proc.returncode}):\n{tail()}"
    api = AirflowApi(base)
    wait_for(lambda: set(dag_ids) <= api.dag_ids(), timeout, f"the DAGs {dag_ids} to be parsed", on_timeout=tail)
    for dag_id in dag_ids:
        api.unpause(dag_id)
    return api
