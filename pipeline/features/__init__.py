"""Features: the chronological split, the fitted preprocessing and the sliding windows.

``windowing``: :class:`Preprocessor` (scalers and encoders fitted on the training part, saved
as JSON), :class:`FeatureSet` (design matrix, targets, window starts per split),
:func:`transform` (the fitted preprocessing applied to new history, never refitted) and the
stage entry point :func:`run_features`.

Imports: ``pipeline.core``, ``pipeline.data``.
"""

from pipeline.features.windowing import (
    FeatureSet,
    Preprocessor,
    build_features,
    load_features,
    load_preprocessor,
    run_features,
    transform,
)

__all__ = ["FeatureSet", "Preprocessor", "build_features", "load_features", "load_preprocessor", "run_features", "transform"]
