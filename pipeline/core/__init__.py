"""Core: what every other subpackage may use and that uses nothing of the pipeline.

``config`` (the typed YAML config), ``errors`` (the error hierarchy), ``schema`` (the long
format's column names), ``artifacts`` (the artifact catalog, run folders, atomic writes),
``runs`` (a run id bound to one config and data set), ``seasons`` (season lengths of a
frequency), ``faults`` (named fault-injection points for the fault tests).

Imports: nothing of ``pipeline`` but itself; no torch, no MLflow.
"""
