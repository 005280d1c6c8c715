"""The online forecast service (``lstm-pipeline serve``): the registered model behind HTTP.

``app`` (FastAPI endpoints, :func:`~pipeline.service.app.serve`), ``models`` (the versions held,
their hot reload from the registry, canary routing), ``metrics`` (Prometheus collectors).

Why a package of its own and not part of :mod:`pipeline.serving`: ``serving`` is what a logged
model ships (a forbidden contract keeps registry, loop and training code out of it), while the
service reads the registry's aliases and loads versions through :mod:`pipeline.predict`, so it
sits at the level of ``predict``'s callers, just under ``cli``. Nothing is imported here: FastAPI,
prometheus-client and MLflow load when the app is built.
"""
