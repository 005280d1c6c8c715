"""Training: the stages that fit forecasters on a run's features.

``lstm`` (the LSTM's training loop: least-squares highway, Adam, early stopping, resumable
checkpoints; stage :func:`pipeline.training.lstm.run_training`) and ``baselines`` (every
statistical baseline on the evaluated origins; stage
:func:`pipeline.training.baselines.run_baselines`). Never shipped with a served model.

Imports: ``pipeline.evaluation`` (the origins), ``pipeline.models``, ``pipeline.features``,
``pipeline.core``.
"""
