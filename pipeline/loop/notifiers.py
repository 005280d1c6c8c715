"""Airflow notifiers for data-fault alerts (the monitoring DAG's ``alert`` task, after ``decide``, calls :func:`alert`).

The notifier class is ``monitoring.alerts.notifier`` (a dotted path). It is built as
``cls(message=<one line per fault>, alerts=<the fault dicts>)`` and called with the task's
Airflow context, as Airflow calls a notifier in a callback (``notifier(context)``,
``airflow.sdk.BaseNotifier.__call__``). The default, :class:`LogNotifier`, writes the alert
to the task log at WARNING; a Slack or e-mail notifier is a subclass that sends ``message``
(Airflow's notifier docs: https://airflow.apache.org/docs/apache-airflow/stable/howto/notifications.html).

Imports Airflow: only the DAG (and tests) import this module, never the library code below it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseNotifier

from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)


class LogNotifier(BaseNotifier):
    """Writes the alert to the log at WARNING (the default notifier: no service needed).

    Args:
        message: the alert text (one line per fault).
        alerts: the fault dicts (``column, unique_id, kind, since, message, measured``).
    """

    template_fields: Sequence[str] = ()  # the message is data, never a Jinja template

    def __init__(self, message: str, alerts: list[dict[str, Any]] | None = None):
        super().__init__()
        self.message, self.alerts = message, list(alerts or [])

    def notify(self, context) -> None:
        where = context.get("ti") or context.get("run_id") or "monitoring"
        log.warning("DATA FAULT ALERT (%s): %s", where, self.message)


def notifier_class(path: str) -> type:
    """The class at dotted ``path`` (``monitoring.alerts.notifier``).

    Raises:
        ConfigError: the module or class does not exist, or is not an Airflow ``BaseNotifier``.
    """
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"monitoring.alerts.notifier: cannot import {path!r} ({exc}); expected a dotted path to an airflow.sdk.BaseNotifier subclass") from None
    if not (isinstance(cls, type) and issubclass(cls, BaseNotifier)):
        raise ConfigError(f"monitoring.alerts.notifier: {path!r} is {cls!r}, not an airflow.sdk.BaseNotifier subclass")
    return cls


def alert(cfg, check: dict[str, Any], context) -> int:
    """Log every data fault of ``check`` at WARNING and call the configured notifier once; returns the count.

    Nothing happens for a check without data faults.

    Raises:
        ConfigError: ``monitoring.alerts.notifier`` cannot be imported or is not a notifier.
    """
    faults = check.get("data_faults") or []
    if not faults:
        return 0
    lines = [f"{f['column']} ({f['kind']}) since {f['since']}: {f['message']}" for f in faults]
    for line in lines:
        log.warning("check %s: DATA FAULT %s", check["check_id"], line)
    head = f"check {check['check_id']}: {len(faults)} data fault(s), no retrain triggered"
    notifier = notifier_class(cfg.monitoring.alerts.notifier)(message="\n".join([head, *lines]), alerts=faults)
    notifier(dict(context or {}))
    return len(faults)
