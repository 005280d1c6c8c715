"""Registry: MLflow tracking and the model registry.

``server`` (the tracking URI, the health check, the one client factory ``connect``),
``tracking`` (one MLflow run per pipeline run), ``aliases`` (alias reads as one snapshot, and
every alias move with its reason under the registered model's lock), ``registration`` (the
register stage: the pyfunc logged with its inference package, tags, ``challenger``/``champion``).

Imports: ``pipeline.serving``, ``pipeline.store``, ``pipeline.models``, ``pipeline.features``,
``pipeline.data``, ``pipeline.core``.
"""
