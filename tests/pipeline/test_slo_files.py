"""The SLO files next to the compose file parse and name only metrics the service really exports."""

from __future__ import annotations

import json
import re

import yaml

from pipeline.service.metrics import ServiceMetrics
from tests.conftest import ROOT

DOCKER = ROOT / "docker"
METRIC = re.compile(r"\b(lstm_[a-z_]+)\b")


def _exported() -> set[str]:
    """Every sample name the service's registry can produce (histogram _bucket/_sum/_count, counter _total)."""
    names = set()
    for family in ServiceMetrics().registry.collect():
        names.add(family.name)
        names.update({f"{family.name}_total", f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count", f"{family.name}_created"})
    return names


def _named(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in METRIC.findall(e)}


def test_alert_rules_parse_and_name_exported_metrics():
    rules = yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"ForecastLatencyP99High", "ForecastErrorRateHigh", "ServedModelStale", "RollingRmseOverThreshold"} <= names
    used = _named(exprs)
    assert used and used <= _exported(), f"not exported by the service: {sorted(used - _exported())}"
    assert "lstm_serving_request_duration_seconds_bucket" in used and "lstm_monitoring_rolling_rmse" in used
    prometheus = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["/etc/prometheus/alerts.yml"]


def test_grafana_dashboard_parses_and_names_exported_metrics():
    board = json.loads((DOCKER / "grafana" / "serving.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    used = _named(exprs)
    assert len(board["panels"]) >= 6 and used <= _exported(), f"not exported by the service: {sorted(used - _exported())}"
    assert {"lstm_serving_forecast_series_total", "lstm_serving_model_version", "lstm_serving_registry_version"} <= used


def test_compose_loads_the_slo_files():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    mounts = {v.split(":")[0] for s in ("prometheus", "grafana") for v in compose["services"][s]["volumes"]}
    assert {"./prometheus/alerts.yml", "./prometheus/prometheus.yml", "./grafana/serving.json", "./grafana/provisioning"} <= mounts
    assert not list(DOCKER.rglob("__init__.py"))
