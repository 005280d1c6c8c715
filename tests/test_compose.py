"""docker/compose.yaml checked without a Docker engine.

- the file validates against the compose-spec JSON schema vendored in docker/schema/;
- every service of the project image has a healthcheck or is a one-shot; every ``depends_on``
  has a condition on a service that exists (and can satisfy it); every port is on loopback;
  every named volume is declared; every ``${NAME}`` is in docker/.env.example; docker/.env is
  git-ignored and the example is not;
- every command the project image runs exists in the installed packages (a console script of a
  distribution the image installs, a module or file of the repository the Dockerfile copies), and
  its subcommands and flags are accepted: ``airflow <cmd> --help``, ``mlflow server --help``,
  ``lstm-pipeline serve --help`` in subprocesses (Airflow 3 with the simple auth manager has no
  ``airflow users``: a compose file that used it fails here);
- the Airflow options set in the environment exist, the SQLAlchemy URLs name installed dialects
  (psycopg 3, sync and async, as tools/services.py), and the pipeline's own variables are the
  names the code reads.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
SCHEMA_FILE = DOCKER / "schema" / "compose-spec.json"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"
#: ``$NAME`` or ``${NAME...}``, not the ``$$`` escape
_VARIABLE = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_]\w*)|([A-Za-z_]\w*))")
_REQUIRED = re.compile(r"(?<!\$)\$\{([A-Za-z_]\w*):?\?")
_INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_]\w*)(?:(:?[-?])([^}]*))?\}")
#: airflow commands tools.airflow_init runs through tools.airflow_local.init_airflow
AIRFLOW_INIT_COMMANDS = (["airflow", "db", "migrate"], ["airflow", "pools", "set"])


def load_compose(path: Path = COMPOSE_FILE) -> dict:
    return yaml.safe_load(path.read_text())


def schema_errors(compose: dict) -> list[str]:
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator.iter_errors(compose)]


def project_services(compose: dict) -> dict[str, dict]:
    """The services built from docker/Dockerfile (the project image)."""
    return {name: s for name, s in compose["services"].items() if "build" in s}


def one_shots(compose: dict) -> set[str]:
    """Services that run once: ``restart: "no"`` and another service waits for them to complete."""
    awaited = {
        target
        for s in compose["services"].values()
        if isinstance(s.get("depends_on"), dict)
        for target, dep in s["depends_on"].items()
        if isinstance(dep, dict) and dep.get("condition") == "service_completed_successfully"
    }
    return {name for name, s in compose["services"].items() if s.get("restart") == "no" and name in awaited}


def strings(node) -> list[str]:
    """Every string value of a YAML tree (comments are not in it)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in strings(k) + strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return []


def env_example(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: not NAME=value: {line!r}"
            pairs[name.strip()] = value.strip()
    return pairs


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}`` with ``env`` (docker/.env)."""

    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        value = env.get(name)
        if op.endswith("-") and not value:
            return arg
        if op.endswith("?") and not value:
            raise AssertionError(f"${{{name}}} is required ({arg}) and unset in {ENV_EXAMPLE.name}")
        return value or ""

    return _INTERPOLATION.sub(sub, text)


def commands(compose: dict, services: dict[str, dict] | None = None) -> list[tuple[str, list[str]]]:
    """``(where, argv)`` of every command and exec-form healthcheck of ``services`` (default: the project image's)."""
    found = []
    for name, s in (project_services(compose) if services is None else services).items():
        cmd = s.get("command")
        assert isinstance(cmd, list) and cmd, f"{name}: give the command in exec form (a list), found {cmd!r}"
        found.append((name, [str(a) for a in cmd]))
        test = (s.get("healthcheck") or {}).get("test")
        if test:
            assert isinstance(test, list) and test[0] == "CMD", f"{name}: healthcheck in exec form ['CMD', ...], found {test!r}"
            found.append((f"{name} healthcheck", [str(a) for a in test[1:]]))
    return found


def dockerfile_copies() -> set[str]:
    """Source paths of the Dockerfile's ``COPY`` lines (relative to the repository root)."""
    srcs = set()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            srcs.update(p.strip("./").rstrip("/") for p in line.split()[1:-1])
    return srcs


def copied(path: str) -> bool:
    parts = Path(path).parts
    return any("/".join(parts[:i]) in dockerfile_copies() for i in range(1, len(parts) + 1))


def image_extras() -> list[str]:
    m = re.search(r'pip install -e "\.\[([^\]]+)\]"', DOCKERFILE.read_text())
    assert m, "the Dockerfile installs the project with its extras: pip install -e \".[...]\""
    return [e.strip() for e in m.group(1).split(",")]


def image_distributions() -> set[str]:
    """The project and every distribution it requires with the image's extras, transitively (as installed here)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r).name for r in project["dependencies"]]
    todo += [Requirement(r).name for e in image_extras() for r in project["optional-dependencies"][e]]
    seen = {canonicalize_name(project["name"])}
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            if req.marker is None or "extra" not in str(req.marker):
                todo.append(req.name)
    return seen


def resolve(argv: list[str]) -> str:
    """Where ``argv[0]`` comes from in the image; AssertionError when nowhere."""
    exe = argv[0]
    scripts = metadata.entry_points(group="console_scripts")
    if exe in scripts.names:
        dist = scripts[exe].dist.name
        assert canonicalize_name(dist) in image_distributions(), f"{exe}: console script of {dist}, which the image's extras do not install"
        return f"console script of {dist}"
    if exe == "python" and argv[1:2] == ["-m"]:
        module = argv[2]
        sys.path.insert(0, str(ROOT))
        try:
            spec = find_spec(module)
        finally:
            sys.path.remove(str(ROOT))
        assert spec is not None and spec.origin, f"python -m {module}: no such module"
        origin = Path(spec.origin)
        if ROOT in origin.parents and ".venv" not in origin.parts:
            rel = origin.relative_to(ROOT).as_posix()
            assert copied(rel), f"python -m {module}: {rel} is not copied into the image by the Dockerfile"
        return f"module {module}"
    if exe == "python" and argv[1:2] == ["-c"]:
        compile(argv[2], "<healthcheck>", "exec")
        return "python -c"
    if exe in ("bash", "sh", "python"):
        script = argv[1]
        assert (ROOT / script).is_file(), f"{exe} {script}: no such file in the repository"
        assert copied(script), f"{exe} {script}: not copied into the image by the Dockerfile"
        return f"file {script}"
    raise AssertionError(f"{exe}: not a console script of the installed packages, nor python -m/-c, nor a script of the repository")


def cli_calls(compose: dict) -> dict[tuple[str, ...], list[list[str]]]:
    """The console-script calls, grouped by executable and subcommand words (``("airflow", "jobs", "check")``)."""
    scripts = metadata.entry_points(group="console_scripts").names
    calls: dict[tuple[str, ...], list[list[str]]] = {}
    for _, argv in commands(compose):
        if argv[0] in scripts:
            words = [argv[0]]
            for arg in argv[1:]:
                if arg.startswith("-"):
                    break
                words.append(arg)
            calls.setdefault(tuple(words), []).append(argv)
    return calls


#: runs ``<script> <words> --help`` for several ``words`` in one interpreter, through the console
#: script's own entry point (``sys.argv`` as the shell would set it): one import of Airflow, not one per command
_HELP_RUNNER = """
import contextlib, io, json, sys
from importlib.metadata import entry_points
script, calls = sys.argv[1], json.loads(sys.argv[2])
main = entry_points(group="console_scripts")[script].load()
out = {}
for words in calls:
    sys.argv = [script, *words, "--help"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            code = main()
        except SystemExit as exc:
            code = exc.code
    out[" ".join(words)] = [code if isinstance(code, int) else (0 if code is None else 1), buf.getvalue()]
print("HELP_RESULT " + json.dumps(out))
"""


def help_texts(script: str, calls: list[tuple[str, ...]], home: Path) -> dict[tuple[str, ...], tuple[int, str]]:
    """``{words: (exit code, output)}`` of ``script words... --help`` for each ``words`` (subcommand words after the script)."""
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "COLUMNS": "200"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    argv = [sys.executable, "-c", _HELP_RUNNER, script, json.dumps([list(w) for w in calls])]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=home, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("HELP_RESULT ")]
    assert lines, f"{script} --help runner failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return {tuple(k.split()) if k else (): tuple(v) for k, v in json.loads(lines[-1][len("HELP_RESULT ") :]).items()}


def unaccepted(calls: dict[tuple[str, ...], list[list[str]]], home: Path) -> list[str]:
    """The subcommands, flags and flag choices of ``calls`` that ``<words> --help`` does not accept."""
    by_script: dict[str, list[tuple[str, ...]]] = {}
    for words in calls:
        by_script.setdefault(words[0], []).append(words[1:])
    with ThreadPoolExecutor(max_workers=4) as pool:
        helps = dict(zip(by_script, pool.map(lambda s: help_texts(s, by_script[s], home), by_script), strict=True))
    problems = []
    for words, argvs in sorted(calls.items()):
        code, text = helps[words[0]][words[1:]]
        if code != 0:
            problems.append(f"`{' '.join(words)} --help` exits {code}: {text[-500:]}")
            continue
        for argv in argvs:
            rest = argv[len(words) :]
            for i, arg in enumerate(rest):
                if not arg.startswith("--"):
                    continue
                flag = arg.split("=")[0]
                if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
                    problems.append(f"{' '.join(words)}: {flag} is not in its --help")
                    continue
                choices = re.search(rf"{re.escape(flag)}[ =]\{{([^}}]+)\}}", text)
                value = arg.split("=", 1)[1] if "=" in arg else (rest[i + 1] if i + 1 < len(rest) else "")
                if choices and value not in choices.group(1).split(","):
                    problems.append(f"{' '.join(words)}: {flag} {value} is not one of {{{choices.group(1)}}}")
    return problems


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory) -> Path:
    """AIRFLOW_HOME (and working folder) of the ``--help`` runs: Airflow writes its config there, nowhere else."""
    return tmp_path_factory.mktemp("cli-home")


# --- the schema --------------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec_schema():
    errors = schema_errors(load_compose())
    assert not errors, "\n".join(errors)


def test_the_schema_is_the_vendored_commit_and_rejects_a_broken_file():
    """The schema is the file docker/schema/README.md names (sha256), and it is not vacuous."""
    digest = hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()
    assert digest in (DOCKER / "schema" / "README.md").read_text(), f"docker/schema/compose-spec.json changed (sha256 {digest}): record its source"
    broken = copy.deepcopy(load_compose())
    broken["services"]["mlflow"]["helthcheck"] = broken["services"]["mlflow"].pop("healthcheck")
    broken["services"]["postgres"]["depends_on"] = {"minio": {"condition": "service_ready"}}
    errors = schema_errors(broken)
    assert any("helthcheck" in e for e in errors) and any("service_ready" in e for e in errors), errors


# --- the services ------------------------------------------------------------------------------------


def test_project_image_services_have_a_healthcheck_or_run_once():
    compose = load_compose()
    runs_once = one_shots(compose)
    assert {"airflow-init", "minio-init"} <= runs_once
    for name, service in project_services(compose).items():
        assert service.get("healthcheck") or name in runs_once, f"{name}: the project image has no HEALTHCHECK; give the service one, or make it a one-shot"
        if name in runs_once:
            assert "healthcheck" not in service and "ports" not in service, f"{name}: a one-shot publishes nothing"


def test_depends_on_has_conditions_on_existing_services():
    compose = load_compose()
    services = compose["services"]
    runs_once = one_shots(compose)
    for name, service in services.items():
        deps = service.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on as a list waits for nothing; give each a condition"
        for target, dep in deps.items():
            assert target in services, f"{name} depends on {target}, which is not a service"
            assert target != name
            condition = dep.get("condition")
            assert condition in ("service_started", "service_healthy", "service_completed_successfully"), f"{name} -> {target}: condition {condition!r}"
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits for {target} to be healthy, which has no healthcheck"
            if condition == "service_completed_successfully":
                assert target in runs_once, f"{name} waits for {target} to complete: it must be a one-shot (restart: \"no\")"
            # a service outside a profile cannot wait for one inside it: `up` without the profile fails
            assert set(services[target].get("profiles", [])) <= set(service.get("profiles", [])), f"{name} depends on {target} of profiles {services[target]['profiles']}"


def test_the_stack_has_its_services():
    services = load_compose()["services"]
    expected = {"postgres", "minio", "minio-init", "mlflow", "airflow-init", "airflow-api-server", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer", "serve", "prometheus", "grafana"}  # fmt: skip
    assert expected <= set(services)
    assert {n for n, s in services.items() if "serving" in s.get("profiles", [])} == {"serve", "prometheus", "grafana"}


def test_ports_bind_loopback_only():
    for name, service in load_compose()["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            else:
                assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name} publishes {port!r} beyond loopback"


def test_volumes_are_named_or_files_of_the_repository():
    compose = load_compose()
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            src = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if src.startswith((".", "/")):
                assert src.startswith("./") and (DOCKER / src).exists(), f"{name} mounts {src}: not a file of docker/"
            else:
                assert src in declared, f"{name} mounts volume {src}, not declared under volumes:"
                used.add(src)
    assert used == declared, f"declared but unused volumes: {sorted(declared - used)}"
    for volume in ("postgres-data", "minio-data", "airflow-logs", "artifacts"):
        assert volume in declared


def test_upstream_images_are_pinned():
    for name, service in load_compose()["services"].items():
        if "build" not in service:
            image = service["image"]
            tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
            assert tag and tag != "latest" and re.search(r"\d+\.\d+|RELEASE\.", tag), f"{name}: pin {image} to a release tag"


# --- secrets -----------------------------------------------------------------------------------------


def test_every_variable_is_in_the_env_example():
    values = strings(load_compose())
    used = {a or b for v in values for a, b in _VARIABLE.findall(v)}
    required = {name for v in values for name in _REQUIRED.findall(v)}
    example = env_example()
    assert used, "compose.yaml reads no variable from docker/.env"
    assert used <= set(example), f"used in compose.yaml, missing from docker/.env.example: {sorted(used - set(example))}"
    assert set(example) <= used, f"in docker/.env.example, unused by compose.yaml: {sorted(set(example) - used)}"
    empty = sorted(n for n in required if not example[n])
    assert not empty, f"required (${{NAME:?}}) yet empty in docker/.env.example, `cp` then `up` would stop: {empty}"
    for secret in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_JWT_SECRET"):
        assert secret in required, f"{secret} must be required (${{{secret}:?...}}), never defaulted"
    for value in values:  # every interpolation resolves with the example's values
        interpolate(value, example)


def test_env_file_is_ignored_and_its_example_is_not():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", "docker/.env"], cwd=ROOT)
    example = subprocess.run(["git", "check-ignore", "-q", "--no-index", "docker/.env.example"], cwd=ROOT)
    assert ignored.returncode == 0, "docker/.env (the secrets) is not git-ignored"
    assert example.returncode == 1, "docker/.env.example is git-ignored: it must be committed"
    assert "cp docker/.env.example docker/.env" in ENV_EXAMPLE.read_text()
    assert "**/.env" in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines(), "docker/.env would enter the build context"


# --- what the services run ---------------------------------------------------------------------------


def test_commands_exist_in_the_installed_packages():
    compose = load_compose()
    found = {where: resolve(argv) for where, argv in commands(compose)}
    assert found["mlflow"] == "console script of mlflow-skinny"
    assert found["airflow-scheduler"] == "console script of apache-airflow-core"
    assert found["airflow-init"] == "module tools.airflow_init"
    assert found["serve"] == "console script of lstm-forecast-pipeline"


def test_subcommands_and_flags_are_accepted(cli_home):
    calls = cli_calls(load_compose())
    for argv in AIRFLOW_INIT_COMMANDS:
        calls.setdefault(tuple(argv), []).append(argv)
    used = {words[:2] for words in calls}
    assert {("airflow", "api-server"), ("airflow", "scheduler"), ("airflow", "dag-processor"), ("airflow", "triggerer"),
            ("airflow", "db"), ("airflow", "jobs"), ("mlflow", "server"), ("lstm-pipeline", "serve")} <= used  # fmt: skip
    problems = unaccepted(calls, cli_home)
    assert not problems, "\n".join(problems)


def test_the_check_rejects_an_unknown_subcommand_and_flag(cli_home):
    """The --help check is not vacuous: Airflow 3 with the simple auth manager has no `users create`."""
    calls = {("airflow", "users", "create"): [["airflow", "users", "create", "--role", "Admin"]],
             ("airflow", "jobs", "check"): [["airflow", "jobs", "check", "--job-type", "WorkerJob"]],
             ("mlflow", "server"): [["mlflow", "server", "--artifact-destination", "s3://x"]]}  # fmt: skip
    problems = unaccepted(calls, cli_home)
    assert len(problems) == 3 and any("users create" in p for p in problems), problems


def test_mlflow_server_runs_on_postgres_and_minio():
    mlflow = load_compose()["services"]["mlflow"]
    cmd = mlflow["command"]
    assert cmd[:2] == ["mlflow", "server"] and "--serve-artifacts" in cmd
    assert cmd[cmd.index("--backend-store-uri") + 1].startswith("postgresql+psycopg://")
    assert cmd[cmd.index("--backend-store-uri") + 1].endswith("@postgres:5432/mlflow")
    assert cmd[cmd.index("--artifacts-destination") + 1] == "s3://mlflow/"
    assert "mlflow:5000" in cmd[cmd.index("--allowed-hosts") + 1].split(","), "the other containers reach it as mlflow:5000"
    env = mlflow["environment"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000" and {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
    init = load_compose()["services"]["minio-init"]
    assert init["command"][-1] == "minio/mlflow", "minio-init creates the bucket of --artifacts-destination"


def test_the_image_installs_the_drivers():
    """psycopg (Postgres everywhere) and boto3 (MLflow's S3 artifacts) come with the image's extras."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(image_extras()) <= set(extras), f"the Dockerfile installs unknown extras: {set(image_extras()) - set(extras)}"
    names = {canonicalize_name(Requirement(r).name) for e in image_extras() for r in extras[e]}
    assert {"psycopg", "boto3", "apache-airflow", "fastapi", "uvicorn"} <= names
    assert not {"pgserver"} & names, "the image runs the postgres container, not pgserver"


def test_airflow_options_exist(tmp_path):
    compose = load_compose()
    options = sorted({k for s in project_services(compose).values() for k in (s.get("environment") or {}) if k.startswith("AIRFLOW__")})
    assert len(options) >= 10
    probe = (
        "import json, sys\nfrom airflow.configuration import conf\nd = conf.configuration_description\n"
        "print(json.dumps([o for o in sys.argv[1:] if o.split('__')[2].lower() not in d.get(o.split('__')[1].lower(), {}).get('options', {})]))"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", probe, *options], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    unknown = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not unknown, f"not Airflow options: {unknown}"


def test_database_urls_use_installed_psycopg_dialects_as_tools_services():
    from sqlalchemy.engine import make_url

    from pipeline.registry.aliases import LOCK_URL_ENV
    from pipeline.store.sql import STORE_URL_ENV
    from tools.services import airflow_database_env

    compose, example = load_compose(), env_example()
    urls = {interpolate(v, example) for v in strings(compose) if v.startswith("postgresql")}
    assert len(urls) == 4, urls
    for url in urls:
        make_url(url).get_dialect()  # the driver is installed (psycopg 3, sync or async)
    airflow = compose["x-airflow-env"]
    for key, local in airflow_database_env(Path("/tmp/pgdata")).items():
        assert make_url(interpolate(airflow[key], example)).drivername == make_url(local).drivername, key
        assert make_url(interpolate(airflow[key], example)).database == "airflow"
    for name in ("airflow-scheduler", "serve"):
        env = compose["services"][name]["environment"]
        store, lock = (make_url(interpolate(env[k], example)) for k in (STORE_URL_ENV, LOCK_URL_ENV))
        assert store.database == lock.database == "forecasts" and store.drivername == "postgresql+psycopg", name
    init_sql = (DOCKER / "postgres" / "init.sql").read_text()
    for database in ("mlflow", "airflow", "forecasts"):
        assert f"CREATE DATABASE {database};" in init_sql
    mounts = compose["services"]["postgres"]["volumes"]
    assert "./postgres/init.sql:/docker-entrypoint-initdb.d/init.sql:ro" in mounts


def test_airflow_components_share_their_secrets_and_logs():
    compose = load_compose()
    airflow = {n: s for n, s in compose["services"].items() if n.startswith("airflow-")}
    assert len(airflow) == 5
    reference = compose["x-airflow-env"]
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        assert {s["environment"][key] for s in airflow.values()} == {reference[key]}, key
    assert reference["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert reference["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert reference["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-api-server:8080/")
    for name in ("airflow-api-server", "airflow-scheduler"):
        assert "airflow-logs:/opt/airflow/logs" in airflow[name]["volumes"], f"{name}: the API server reads the scheduler's task logs"
    file = reference["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    for name in ("airflow-init", "airflow-api-server"):
        assert any(v.endswith(":" + str(Path(file).parent)) for v in airflow[name]["volumes"]), f"{name} does not share {file}"


# --- tools/airflow_init.py ---------------------------------------------------------------------------


def test_airflow_init_migrates_then_writes_the_admin_password(tmp_path, monkeypatch):
    import tools.airflow_local
    from tools import airflow_init

    calls = []
    monkeypatch.setattr(tools.airflow_local, "init_airflow", lambda home, env: calls.append((home, env["AIRFLOW_HOME"])))
    file = tmp_path / "auth" / "passwords.json"
    file.parent.mkdir()
    file.write_text(json.dumps({"viewer": "v"}) + "\n")
    env = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW_ADMIN_USER": "admin", "AIRFLOW_ADMIN_PASSWORD": "s3cret", airflow_init.PASSWORDS_FILE_ENV: str(file)}
    assert airflow_init.main(env) == 0
    assert calls == [(tmp_path, str(tmp_path))]
    assert json.loads(file.read_text()) == {"viewer": "v", "admin": "s3cret"}
    assert file.stat().st_mode & 0o777 == 0o600
    compose = load_compose()
    init_env = compose["services"]["airflow-init"]["environment"]
    assert {airflow_init.ADMIN_USER_ENV, airflow_init.ADMIN_PASSWORD_ENV, airflow_init.PASSWORDS_FILE_ENV} <= set(init_env)
    assert airflow_init.PASSWORDS_FILE_ENV in compose["services"]["airflow-api-server"]["environment"]
