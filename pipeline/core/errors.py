"""The pipeline's error hierarchy, in one place.

Every error a user can cause derives from :class:`PipelineError`. Its message says
what was expected, what was found, and where (key, column, row, timestamp), so the
CLI can print it without a traceback and Airflow shows it in the task log.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose.

    Attributes:
        stage: the stage that raised it (``validate``, ``features``, ``train``, ``baselines``,
            ``compare``, ``register``), set by the runner; ``None`` outside a pipeline run.
    """

    stage: str | None = None


class ConfigError(PipelineError):
    """A config file is missing, unreadable, or has an unknown key or a bad value."""


class DataLoadError(PipelineError):
    """The data file is missing, empty, or not a comma-separated file."""


class SchemaValidationError(PipelineError):
    """The data failed one or more expectations of the generated suite.

    Attributes:
        failures: one dict per failed expectation (``expectation``, ``column``,
            ``unexpected_count``, ``examples``), as written to the JSON report.
        report: the whole ``ValidationReport`` (every check, passed or not).
    """

    def __init__(self, message: str, failures: list[dict] | None = None, report=None):
        super().__init__(message)
        self.failures = failures or []
        self.report = report


class DataQualityError(PipelineError):
    """The data is valid but unusable for the configured task (too short, unseen level)."""


class TrainingError(PipelineError):
    """Training diverged (NaN/inf loss), or the requested device is not available."""


class GateFailedError(PipelineError):
    """A quality gate failed and the caller asked for an exception."""


class RegistryError(PipelineError):
    """The MLflow tracking server or model registry could not be used."""


class StoreError(PipelineError):
    """The forecast store (SQL database at ``monitoring.store_url``) could not be used."""


class MonitoringError(PipelineError):
    """A monitoring check cannot run (e.g. the champion version lacks its reference sample)."""
