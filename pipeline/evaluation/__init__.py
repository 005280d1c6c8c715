"""Evaluation: the origins every model is scored on, the metrics, the comparison and the gate.

``origins`` (:func:`~pipeline.evaluation.origins.select_origins`, chosen once and passed to
every forecaster), ``comparison`` (RMSE/MAE/MASE on the original scale, the comparison table,
the gate as a typed :class:`~pipeline.evaluation.comparison.GateDecision`; stage
:func:`~pipeline.evaluation.comparison.run_comparison`).

Imports: ``pipeline.models``, ``pipeline.features``, ``pipeline.core``.
"""
