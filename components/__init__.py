"""Kubeflow Pipelines (KFP v2) wiring over ``pipeline/``: components, pipelines, compile."""
