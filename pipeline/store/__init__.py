"""The forecast store: forecasts, scores, checks and alias events in one SQL database.

``sql``: :class:`ForecastStore` (SQLAlchemy; SQLite by default, Postgres in production).

Imports: ``pipeline.core``.
"""

from pipeline.store.sql import ForecastStore, default_store_url, store_for

__all__ = ["ForecastStore", "default_store_url", "store_for"]
