"""Repository-level checks: layout, the docker files (checked without an engine), no shadowing packages."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT


@pytest.mark.parametrize("folder", ["mlflow", "docker"])
def test_folders_never_shadow_installed_packages(folder):
    assert not (ROOT / folder / "__init__.py").exists()
    import docker  # noqa: F401  (the installed packages still resolve)
    import mlflow

    assert Path(mlflow.__file__).parent != ROOT / "mlflow"


def test_layout():
    for name in ("dags", "pipeline", "components", "tests", "docker", "mlflow", "configs", "benchmarks", "docs", "README.md", "pyproject.toml", "Makefile"):
        assert (ROOT / name).exists(), name


def test_dockerfile_passes_hadolint():
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    proc = subprocess.run([exe, str(ROOT / "docker" / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_file_builds_the_project_image_and_binds_loopback():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        build = service["build"]
        assert (ROOT / "docker" / build["context"] / build["dockerfile"]).resolve() == (ROOT / "docker" / "Dockerfile").resolve()
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    copied = [line.split()[1] for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")]
    for src in copied:
        assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    """A shipped config that no longer matches the typed config (a removed key) fails here, not at a user's first run."""
    from pipeline.core.config import load_config

    cfg = load_config(path)
    assert cfg.name and cfg.features.horizon >= 1
