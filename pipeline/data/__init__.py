"""Data: raw CSV -> the validated long frame ``unique_id, ds, y`` (+ covariates).

``io`` reads the raw file (or the synthetic source), cuts it as of ``T`` and converts raw
rows to the long frame on the ``freq`` grid (the one raw -> long conversion, shared by
training and serving); ``validation`` is the Great Expectations stage.

Imports: ``pipeline.core``. The public surface below is ``io``'s (shipped with a served model);
``validation`` is imported as ``pipeline.data.validation``.
"""

from pipeline.data.io import as_of_timestamp, file_sha256, raw_to_long, read_raw, rows_before

__all__ = ["as_of_timestamp", "file_sha256", "raw_to_long", "read_raw", "rows_before"]
