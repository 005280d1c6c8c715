"""Registry faults against a real ``mlflow server``: kills at named points, races, 5xx answers, reuse.

After every fault the registry must hold: no alias on a version whose gate did not pass, no
run that claims a registration without a version, and a rerun that finishes the job.
"""

import http.server
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.core.errors import RegistryError
from pipeline.registry import aliases
from pipeline.runner import run_training_pipeline
from tests.conftest import register_folder, write_sine_case

pytestmark = pytest.mark.slow

REGISTER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from pipeline.core.config import load_config
    from pipeline.registry.registration import track_and_register
    from pipeline.data.validation import validated_from_folder
    config, run, sha, overrides = sys.argv[1], Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    validated = {**validated_from_folder(run / "validation"), "data_sha256": sha}
    result = track_and_register(load_config(config, overrides), run, validated, run / "features", run / "training", run / "evaluation")
    print("RESULT " + json.dumps(result))
""")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One gate-passing run folder (trained once, never registered); tests copy it."""
    root = tmp_path_factory.mktemp("faults")
    config = write_sine_case(root, "faults", "unused")
    cfg = load_config(config)
    result = run_training_pipeline(cfg, root / "artifacts" / "base", register=False)
    assert result["gate_passed"], result["gate_reasons"]
    sha = json.loads((root / "artifacts" / "base" / "validation" / "report.json").read_text())["data_sha256"]
    return {"config": config, "root": root, "base": root / "artifacts" / "base", "sha": sha}


@pytest.fixture
def env(mlflow_server, monkeypatch, tmp_path):
    """The real server as the tracking URI, a private lock folder, and a fresh model name per test."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv(aliases.LOCK_DIR_ENV, str(tmp_path / "locks"))
    mlflow.set_tracking_uri(mlflow_server)
    return {"uri": mlflow_server, "model": f"m-{uuid.uuid4().hex[:8]}", "client": mlflow.tracking.MlflowClient()}


def _copy(trained, name: str, root: Path | None = None) -> Path:
    dst = (root or trained["base"].parent) / name
    shutil.copytree(trained["base"], dst)
    (dst / "run.json").unlink()  # a copy is a new run
    return dst


def _cfg(trained, env, **more):
    overrides = {"mlflow.registered_model_name": env["model"], **more}
    return load_config(trained["config"], overrides), overrides


def _register_in_subprocess(trained, env, run: Path, fault: str | None, **more) -> subprocess.Popen:
    _, overrides = _cfg(trained, env, **more)
    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if fault:
        child_env["LSTM_PIPELINE_FAULT"] = fault
    args = [sys.executable, "-c", REGISTER, str(trained["config"]), str(run), trained["sha"], json.dumps(overrides)]
    return subprocess.Popen(args, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _state(env) -> dict:
    """``{version: {"aliases": [...], "gate": tag}}`` of the test's registered model."""
    client, name = env["client"], env["model"]
    out = {}
    for v in client.search_model_versions(f"name='{name}'"):
        full = client.get_model_version(name, v.version)
        out[int(v.version)] = {"aliases": sorted(full.aliases), "gate": full.tags.get("gate"), "tags": full.tags}
    return out


def _assert_invariants(env) -> None:
    for version, s in _state(env).items():
        if s["aliases"]:
            assert s["gate"] == "passed", f"v{version} has aliases {s['aliases']} but gate={s['gate']}"
            for alias in s["aliases"]:
                assert s["tags"].get(f"alias.{alias}.reason"), f"v{version} is {alias} without a recorded reason"


@pytest.mark.parametrize(
    "point", ["after_log_model", "after_version_created", "before_set_alias_challenger", "between_alias_moves", "before_set_alias_champion"]
)
def test_a_registration_killed_at_any_point_is_finished_by_the_rerun(trained, env, point):
    run = _copy(trained, f"kill-{point}")
    proc = _register_in_subprocess(trained, env, run, point)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == -9, err[-3000:]
    _assert_invariants(env)
    cfg, _ = _cfg(trained, env)
    result = register_folder(cfg, run, trained["sha"])
    assert result["registered_version"] == 1 and result["aliases"] == ["challenger", "champion"]
    state = _state(env)
    assert list(state) == [1], f"one run, one version: {state}"
    assert state[1]["tags"]["alias.champion.reason"].startswith("first version")
    _assert_invariants(env)


def test_two_processes_with_different_artifact_roots_make_only_one_first_champion(trained, env, tmp_path):
    """Both read "no champion" unless the per-model lock serialises them; the sleep widens the race window."""
    runs = []
    for i in range(2):
        root = tmp_path / f"root-{i}"
        root.mkdir()
        runs.append(_copy(trained, f"race-{i}", root))
    procs = [_register_in_subprocess(trained, env, run, "before_first_champion:sleep=12", **{"run.artifact_root": str(run.parent)}) for run in runs]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]) for out, _ in outs]
    champions = [r["registered_version"] for r in results if "champion" in r["aliases"]]
    assert len(champions) == 1, f"champion was set by both runs (it moved): {results}"
    state = _state(env)
    assert sorted(state) == [1, 2]
    assert [v for v, s in state.items() if "alias.champion.reason" in s["tags"]] == champions
    assert env["client"].get_model_version_by_alias(env["model"], "champion").version == str(champions[0])


@pytest.mark.postgres
def test_two_machines_registering_at_once_against_postgres_get_distinct_versions_and_one_champion(trained, mlflow_server_postgres, postgres, tmp_path, monkeypatch):
    """MLflow's backend on Postgres; each process has its own lock folder (as two machines would), so
    only the Postgres advisory lock (``LSTM_PIPELINE_LOCK_URL``) can serialise their alias moves."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server_postgres)
    monkeypatch.setenv(aliases.LOCK_URL_ENV, postgres("locks"))
    env = {"uri": mlflow_server_postgres, "model": f"pg-{uuid.uuid4().hex[:8]}", "client": mlflow.tracking.MlflowClient(mlflow_server_postgres)}
    procs = []
    for i in range(2):
        root = tmp_path / f"machine-{i}"
        root.mkdir()
        run = _copy(trained, f"race-{i}", root)
        monkeypatch.setenv(aliases.LOCK_DIR_ENV, str(root / "locks"))  # no shared lock file
        procs.append(_register_in_subprocess(trained, env, run, "before_first_champion:sleep=8", **{"run.artifact_root": str(root)}))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]) for out, _ in outs]
    assert sorted(r["registered_version"] for r in results) == [1, 2]
    champions = [r["registered_version"] for r in results if "champion" in r["aliases"]]
    assert len(champions) == 1, f"champion was set by both runs (it moved): {results}"
    state = _state(env)
    assert sorted(state) == [1, 2]
    assert [v for v, s in state.items() if "alias.champion.reason" in s["tags"]] == champions
    assert sum("challenger" in s["aliases"] for s in state.values()) == 1
    assert env["client"].get_model_version_by_alias(env["model"], "champion").version == str(champions[0])
    _assert_invariants(env)


class _FaultyProxy(http.server.BaseHTTPRequestHandler):
    """Forwards every request to the real server, except that GETs of ``fail`` paths answer 503."""

    upstream = ""
    fail: tuple[str, ...] = ()

    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        if self.command == "GET" and self.path.split("?")[0].endswith(self.fail):
            self.send_response(503)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>503 Service Unavailable</html>")
            return
        req = urllib.request.Request(self.upstream + self.path, data=body, method=self.command)
        for key in ("Content-Type", "Authorization"):
            if self.headers.get(key):
                req.add_header(key, self.headers[key])
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                status, payload, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as exc:
            status, payload, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "application/json")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def faulty_proxy(mlflow_server):
    def start(*fail: str) -> str:
        handler = type("Proxy", (_FaultyProxy,), {"upstream": mlflow_server, "fail": fail})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    servers: list = []
    yield start
    for server in servers:
        server.shutdown()


@pytest.mark.parametrize("endpoint", ["/registered-models/alias", "/registered-models/get"])
def test_a_server_error_while_reading_aliases_never_makes_a_new_champion(trained, env, faulty_proxy, monkeypatch, endpoint):
    cfg, _ = _cfg(trained, env)
    tag = endpoint.rsplit("/", 1)[-1]
    first = register_folder(cfg, _copy(trained, f"5xx-first-{tag}"), trained["sha"])
    assert first["aliases"] == ["challenger", "champion"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", faulty_proxy(endpoint))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    try:
        out = register_folder(cfg, _copy(trained, f"5xx-second-{tag}"), trained["sha"])
    except RegistryError as err:
        assert "503" in str(err) or "Service Unavailable" in str(err) or "INTERNAL_ERROR" in str(err) or "TEMPORARILY_UNAVAILABLE" in str(err), str(err)
        out = None
    champion = env["client"].get_model_version_by_alias(env["model"], "champion").version
    assert champion == "1", f"a 5xx answer moved champion to v{champion} (result {out})"
    _assert_invariants(env)


def test_a_server_error_under_the_lock_moves_no_alias(trained, env, faulty_proxy, monkeypatch):
    """The alias decisions themselves, with every read of the registered model answered 503."""
    import mlflow
    from pipeline.registry.registration import assign_aliases

    cfg, _ = _cfg(trained, env)
    first = register_folder(cfg, _copy(trained, "5xx-lock"), trained["sha"])
    v1 = env["client"].get_model_version(env["model"], str(first["registered_version"]))
    v2 = env["client"].create_model_version(env["model"], source=v1.source, run_id=v1.run_id, tags={"gate": "passed"}, model_id=v1.source.removeprefix("models:/"))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    proxy = faulty_proxy("/registered-models/get")
    with pytest.raises(RegistryError, match="not a 'not found' answer"):
        assign_aliases(mlflow.tracking.MlflowClient(tracking_uri=proxy), proxy, env["model"], int(v2.version), {"lstm_rmse": 1.0})
    assert _state(env)[int(v2.version)]["aliases"] == [] and _state(env)[1]["aliases"] == ["challenger", "champion"]


def test_not_found_is_only_resource_does_not_exist(env, faulty_proxy, monkeypatch):
    import mlflow

    assert aliases.alias_version(env["client"], env["model"], "champion") is None  # no such model: not found
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = mlflow.tracking.MlflowClient(tracking_uri=faulty_proxy("/registered-models/get"))
    with pytest.raises(RegistryError, match="not a 'not found' answer"):
        aliases.alias_version(client, env["model"], "champion")
    with pytest.raises(RegistryError, match="not a 'not found' answer"):
        aliases.ensure_registered_model(client, env["model"])
    assert aliases.is_not_found(mlflow.exceptions.MlflowException("x", error_code=mlflow.protos.databricks_pb2.RESOURCE_DOES_NOT_EXIST))
    assert not aliases.is_not_found(mlflow.exceptions.MlflowException("x", error_code=mlflow.protos.databricks_pb2.INTERNAL_ERROR))


def test_reusing_a_run_id_with_another_config_is_refused_not_merged(trained, env):
    run = _copy(trained, "reuse")
    cfg, _ = _cfg(trained, env)
    first = register_folder(cfg, run, trained["sha"])
    params = env["client"].get_run(first["mlflow_run_id"]).data.params
    (run / "run.json").unlink()  # even without the folder's record, the MLflow run knows its fingerprint
    other, _ = _cfg(trained, env, **{"training.learning_rate": 0.02})
    with pytest.raises(RegistryError, match="logged from another config or other data"):
        register_folder(other, run, trained["sha"])
    (run / "run.json").unlink()
    with pytest.raises(RegistryError, match="logged from another config or other data"):
        register_folder(cfg, run, "0" * 64)
    assert env["client"].get_run(first["mlflow_run_id"]).data.params == params
    assert list(_state(env)) == [1]


def test_a_stricter_gate_rerun_rewrites_the_version_tags_and_withdraws_challenger(trained, env):
    from pipeline.evaluation.comparison import run_comparison

    cfg, _ = _cfg(trained, env)
    register_folder(cfg, _copy(trained, "gate-1"), trained["sha"])
    run = _copy(trained, "gate-2")
    second = register_folder(cfg, run, trained["sha"])
    assert second["registered_version"] == 2 and second["aliases"] == ["challenger"]
    strict = cfg.model_copy(update={"gate": cfg.gate.model_copy(update={"min_relative_improvement": 0.99})})
    run_comparison(strict, run, run / "features", run / "training", run / "baselines")  # the verdict in the folder is now "failed"
    out = register_folder(cfg, run, trained["sha"])
    assert out["registration"].startswith("skipped: gate failed")
    state = _state(env)
    assert state[2]["gate"] == "failed" and state[2]["aliases"] == [] and "alias.challenger.removed" in state[2]["tags"]
    assert state[1]["aliases"] == ["champion"]  # challenger went with v2; nothing else moved
    _assert_invariants(env)
