"""Time zones end to end: one parser (``pipeline.data.io.parse_timestamps``), naive UTC inside.

Inputs with ``Z`` or a UTC offset are converted to UTC; naive local times with ``data.timezone``
are converted too (DST repeats told apart by file order, a skipped hour refused with its line);
forecasts come out with their offset; the store keeps UTC.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.core import schema
from pipeline.core.config import load_config
from pipeline.core.errors import ConfigError, DataQualityError, SchemaValidationError
from pipeline.data.io import long_to_raw, parse_timestamps, raw_to_long, read_raw
from pipeline.data.validation import validate_frame
from pipeline.features.windowing import build_features, design_matrix, fill_short_gaps
from pipeline.models.lstm import LSTMForecaster, build_model
from pipeline.serving.pyfunc import ForecastModel
from tests.conftest import tiny_frame

UTC_GRID = pd.date_range("2024-01-01 00:00:00", periods=120, freq="h")


def _validated(make_case, frame, **data):
    config, _ = make_case(frame, data=data) if data else make_case(frame)
    cfg = load_config(config)
    return cfg, validate_frame(read_raw(cfg.data), cfg).frame


def _written(frame, layout: str, zone: str | None = None) -> pd.DataFrame:
    """``tiny_frame`` with its (UTC) grid written as text in ``layout`` (``%z`` etc.), in ``zone``."""
    stamps = UTC_GRID.tz_localize("UTC")
    frame = frame.copy()
    stamps = stamps.tz_convert(zone) if zone else stamps
    frame["time"] = [t.isoformat() for t in stamps] if layout == "iso" else stamps.strftime(layout)
    return frame


@pytest.mark.parametrize(
    ("layout", "zone", "fmt"),
    [
        ("%Y-%m-%dT%H:%M:%SZ", None, None),  # ISO 8601 in UTC, as exported by most systems
        ("%Y-%m-%dT%H:%M:%SZ", None, "%Y-%m-%dT%H:%M:%SZ"),  # the same with its format given
        ("iso", "Australia/Brisbane", None),  # +10:00, no DST
        ("%Y-%m-%d %H:%M:%S%z", "Australia/Brisbane", "%Y-%m-%d %H:%M:%S%z"),  # +1000 with %z
    ],
)
def test_timestamps_with_an_offset_are_utc_inside(make_case, layout, zone, fmt):
    frame = _written(tiny_frame(), layout, zone)
    cfg, long = _validated(make_case, frame, **({"timestamp_format": fmt} if fmt else {}))
    assert long[schema.DS].dt.tz is None
    assert (long[schema.DS].to_numpy() == UTC_GRID.to_numpy()).all()
    fs = build_features(long, cfg)  # the split boundaries once crashed on aware timestamps
    assert fs.report["windows"]["train"] > 0


@pytest.mark.parametrize("start", ["2021-03-27 20:00", "2021-10-30 20:00"])
def test_naive_local_times_across_a_dst_change_are_one_utc_grid(start):
    """Europe/London, 2021: 01:00-02:00 does not exist on 28 March; 01:00-02:00 happens twice on 31 October."""
    utc = pd.date_range(start, periods=11, freq="h")
    local = utc.tz_localize("UTC").tz_convert("Europe/London").strftime("%Y-%m-%d %H:%M:%S")
    assert len(set(local)) == (10 if start.startswith("2021-10") else 11) and "2021-03-28 01:00:00" not in local
    frame = pd.DataFrame({"time": local, "load": np.arange(len(local), dtype=float), "temp": 0.0, "wind": "N"})
    spec = load_config_like(timezone="Europe/London")
    assert (parse_timestamps(frame, spec).to_numpy() == utc.to_numpy()).all()
    long = raw_to_long(frame, spec)
    assert len(long) == len(utc) and long[schema.Y].notna().all(), "a DST change must leave neither a gap nor a duplicate"


def test_a_local_time_skipped_at_the_dst_start_is_refused_with_its_line(make_case):
    frame = tiny_frame(n=48, start="2021-03-27 12:00:00")  # naive hourly: includes 2021-03-28 01:00, which London skipped
    with pytest.raises(SchemaValidationError, match=r"expect_local_times_to_exist_once.*\n.*line 15: local time '2021-03-28 01:00:00' .*Europe/London.* does not exist"):
        _validated(make_case, frame, timezone="Europe/London")


def test_an_ambiguous_local_time_that_order_cannot_resolve_is_refused_with_its_line():
    frame = pd.DataFrame({"time": ["2021-10-31 00:00:00", "2021-10-31 01:00:00", "2021-10-31 03:00:00"]})
    with pytest.raises(DataQualityError, match=r"line 3: local time '2021-10-31 01:00:00'.* is ambiguous"):
        parse_timestamps(frame, load_config_like(timezone="Europe/London"))


def test_a_repeated_hour_without_timezone_is_a_located_duplicate(make_case):
    frame = tiny_frame()
    frame.loc[30, "time"] = frame.loc[29, "time"]  # what a naive local export looks like at a DST end
    with pytest.raises(SchemaValidationError, match=r"unique"):
        _validated(make_case, frame)


@pytest.mark.parametrize(
    ("second", "shown"),
    [("+02:00", r"\+02:00"), ("", r"offset none")],  # two offsets; an offset and none
)
def test_mixed_offsets_are_refused_with_the_first_line_of_each(make_case, second, shown):
    frame = tiny_frame()
    frame["time"] = frame["time"] + np.where(frame.index < 60, "+01:00", second)
    with pytest.raises(SchemaValidationError, match=rf"expect_one_utc_offset.*\n.*line 2: .*\+01:00.*\n.*line 62: .*{shown}"):
        _validated(make_case, frame)
    with pytest.raises(DataQualityError, match=r"mixes UTC offsets .*line 2.*line 62"):
        parse_timestamps(frame, load_config_like())


def test_a_value_off_the_format_is_named_with_the_format(make_case):
    frame = tiny_frame()
    frame.loc[40, "time"] = "01/02/2024 16:00"
    with pytest.raises(SchemaValidationError, match=r"expect_column_values_to_be_timestamps.*\n.*line 42: '01/02/2024 16:00' is not a timestamp in %Y-%m-%d %H:%M:%S"):
        _validated(make_case, frame, timestamp_format="%Y-%m-%d %H:%M:%S")
    with pytest.raises(DataQualityError, match=r"line 42: column 'time' has '01/02/2024 16:00', which is not a timestamp in the format of line 2"):
        parse_timestamps(frame, load_config_like())


def test_an_unknown_timezone_is_a_config_error(make_case):
    config, _ = make_case(data={"timezone": "Mars/Olympus"})
    with pytest.raises(ConfigError, match=r"IANA time zone .*'Mars/Olympus'"):
        load_config(config)


def test_calendar_features_use_local_time_when_timezone_is_set(make_case):
    cfg, long = _validated(make_case, _written(tiny_frame(), "%Y-%m-%dT%H:%M:%SZ"), timezone="Asia/Tokyo")
    cfg = cfg.model_copy(update={"features": cfg.features.model_copy(update={"calendar_features": ("hour",)})})
    prep = build_features(long, cfg).prep
    assert prep.timezone == "Asia/Tokyo"
    part = fill_short_gaps(long, [schema.Y, "temp"], ["wind"], prep.max_gap)
    hour_sin = design_matrix(part, prep)[:, prep.feature_names.index("hour_sin")]
    local_hour = (long[schema.DS].dt.hour + 9) % 24  # Tokyo is UTC+9 all year
    assert np.allclose(hour_sin, np.sin(2 * np.pi * local_hour / 24), atol=1e-6)


def _served(cfg, long) -> ForecastModel:
    torch.manual_seed(0)
    prep = build_features(long, cfg).prep
    return ForecastModel().use(LSTMForecaster.from_members([build_model(prep.n_features, prep.horizon, cfg.model, prep.lookback)], prep))


def test_forecasts_come_out_with_their_offset(make_case):
    """Offset in -> the same instants out, with an offset; naive in -> naive out; data.timezone -> local offset."""
    aware = _written(tiny_frame(), "iso", "Australia/Brisbane")
    cfg, long = _validated(make_case, aware)
    model = _served(cfg, long)
    out = model.predict(None, aware)
    assert str(out[schema.DS].dt.tz) == "UTC"
    assert out[schema.DS].iat[0] == pd.Timestamp(UTC_GRID[-1] + pd.Timedelta(hours=1), tz="UTC")
    naive = tiny_frame()
    assert model.predict(None, naive)[schema.DS].dt.tz is None
    assert np.allclose(model.predict(None, naive)["yhat"], out["yhat"]), "the same instants must give the same forecasts"

    cfg_tz, long_tz = _validated(make_case, aware, timezone="Australia/Sydney")
    local = _served(cfg_tz, long_tz).predict(None, long_to_raw(long_tz, cfg_tz.data))
    assert str(local[schema.DS].dt.tz) == "Australia/Sydney"
    assert local[schema.DS].iat[0] == out[schema.DS].iat[0]  # the same instant, written in Sydney time


def test_naive_datetimes_sent_to_a_model_with_a_timezone_are_its_local_times_like_text(make_case):
    """A frame read with parse_dates carries naive datetimes: with data.timezone they are local times there, as the same
    values as text are; taking them as UTC would shift every origin and the calendar inputs by the offset, silently."""
    aware = _written(tiny_frame(), "iso", "Australia/Brisbane")
    cfg, long = _validated(make_case, aware, timezone="Australia/Sydney")
    model = _served(cfg, long)
    text = tiny_frame().assign(time=long[schema.DS].dt.tz_localize("UTC").dt.tz_convert("Australia/Sydney").dt.strftime("%Y-%m-%d %H:%M:%S"))
    typed = text.assign(time=pd.to_datetime(text["time"]))
    from_text, from_typed = model.predict(None, text), model.predict(None, typed)
    assert from_typed[schema.DS].equals(from_text[schema.DS]) and str(from_typed[schema.DS].dt.tz) == "Australia/Sydney"
    assert np.allclose(from_typed["yhat"], from_text["yhat"])


def test_a_missing_timestamp_in_a_served_history_is_named_with_its_row(make_case):
    cfg, long = _validated(make_case, tiny_frame())
    history = tiny_frame().astype({"time": object})
    history.loc[5, "time"] = None
    with pytest.raises(DataQualityError, match=r"history: column 'time' expects a timestamp on every row; line\(s\) \[7\]"):
        _served(cfg, long).predict(None, history)


def test_the_store_keeps_utc(tmp_path):
    from pipeline.store.sql import ForecastStore

    store = ForecastStore(f"sqlite:///{tmp_path / 'store.db'}")
    at = pd.Timestamp("2024-01-05 10:00", tz="Australia/Brisbane")
    frame = pd.DataFrame({
        "model_name": ["m"], "version": [1], "unique_id": ["s"], "origin": [at], "step": [1],
        "ds": [at + pd.Timedelta(hours=1)], "yhat": [1.0], "alias": ["champion"], "as_of": [at],
    })  # fmt: skip
    store.upsert_forecasts(frame)
    back = store.published("m")
    assert back["origin"].iat[0] == pd.Timestamp("2024-01-05 00:00")  # 10:00 at +10:00 is 00:00 UTC


def load_config_like(**data):
    """A minimal spec for :func:`parse_timestamps`/:func:`raw_to_long` (what a Preprocessor or DataConfig offers)."""
    from types import SimpleNamespace

    base = {"timestamp_column": "time", "target_column": "load", "covariates": ["temp"], "categorical_covariates": ["wind"],
            "series_id_column": None, "freq": "h", "timestamp_format": None, "timezone": None}  # fmt: skip
    return SimpleNamespace(**{**base, **data})
