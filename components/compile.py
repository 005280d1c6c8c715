"""Compile the pipelines to KFP IR YAML: ``python -m components.compile [--out DIR] [--image IMG]``.

Writes ``lstm_training_pipeline.yaml`` and ``lstm_monitoring_pipeline.yaml`` (``make kfp``:
into ``components/build/``), ready for ``kfp.Client(host).upload_pipeline``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from components.pipelines import build, image

OUT = Path(__file__).resolve().parent / "build"


def compile_all(out: Path = OUT, base_image: str | None = None) -> dict[str, Path]:
    """Compile both pipelines into ``out``; returns ``{pipeline name: yaml path}``."""
    from kfp import compiler

    built = build(base_image)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"lstm_training_pipeline": out / "lstm_training_pipeline.yaml", "lstm_monitoring_pipeline": out / "lstm_monitoring_pipeline.yaml"}
    compiler.Compiler().compile(built.training, str(paths["lstm_training_pipeline"]))
    compiler.Compiler().compile(built.monitoring, str(paths["lstm_monitoring_pipeline"]))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the YAML files (default components/build)")
    parser.add_argument("--image", default=None, help="base image (default $LSTM_PIPELINE_IMAGE or lstm-forecast-pipeline:latest)")
    args = parser.parse_args(argv)
    for name, path in compile_all(args.out, args.image or image()).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
