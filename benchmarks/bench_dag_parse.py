"""DAG parse time: how long the scheduler's DAG processor spends importing each file in ``dags/``.

Each file is imported in a fresh interpreter (temporary ``AIRFLOW_HOME``) after ``airflow.sdk``
itself is imported, so the figure is the DAG file's own cost: the probe of
``tests/dags/test_dag_integrity.py``. Repeated ``--repeat`` times; median and max reported.
Airflow's guidance: keep top-level DAG code cheap (no heavy imports, no I/O), since the
DAG processor re-parses every file every ``min_file_process_interval`` (30 s by default).
Run: ``python benchmarks/bench_dag_parse.py [--repeat 5]``; writes
``benchmarks/results/bench_dag_parse.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.dags.test_dag_integrity import HEAVY, PROBE  # noqa: E402
from tools.airflow_local import DAGS, airflow_env  # noqa: E402


def parse_seconds(path: Path, home: Path) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), json.dumps(sorted(HEAVY))],
        env=airflow_env(home), capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")][-1]
    return json.loads(line[len("PROBE ") :])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(DAGS.glob("*.py")):
            runs = [parse_seconds(path, Path(tmp) / "home") for _ in range(args.repeat)]
            results[path.name] = {"median_s": statistics.median(runs), "max_s": max(runs), "runs": runs}
            print(f"{path.name}: median {results[path.name]['median_s'] * 1000:.0f} ms, max {max(runs) * 1000:.0f} ms")
    out = {"date": date.today().isoformat(), "machine": platform.platform(), "python": platform.python_version(), "files": results}
    target = ROOT / "benchmarks" / "results" / "bench_dag_parse.json"
    target.write_text(json.dumps(out, indent=2))
    print(f"written {target}")


if __name__ == "__main__":
    main()
