"""Serving: the registered model as MLflow loads it.

``pyfunc``: :class:`ForecastModel`, the self-contained MLflow pyfunc (raw history ->
forecasts in original units). A logged model ships exactly the modules in
:data:`pipeline.serving.pyfunc.INFERENCE_FILES`: this package and what it imports, no
training or loop code.

Imports: ``pipeline.models`` (``lstm``, ``network``), ``pipeline.features``,
``pipeline.data`` (``io``), ``pipeline.core``.

``pipeline.serving.ForecastModel`` is the class path MLflow pickled in every version
registered before the subpackage layout: it stays importable here.
"""

from pipeline.serving.pyfunc import SIGNATURE_PARAMS, ForecastModel

__all__ = ["SIGNATURE_PARAMS", "ForecastModel"]
