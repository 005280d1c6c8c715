"""The closed loop: the monitoring check, drift, the canary and its alias moves, replay.

``monitoring`` (a check as of ``T``: forecast, score, drift, decide), ``drift`` (Evidently),
``canary`` (the Diebold-Mariano decision), ``promotion`` (the canary's and the operators'
alias transactions), ``scenarios`` (faults to replay), ``replay`` (the loop over history).
Design: ``docs/LOOP.md``.

Imports: ``pipeline.runner``, ``pipeline.stages``, ``pipeline.registry``, ``pipeline.store``,
``pipeline.data``, ``pipeline.core``.
"""
