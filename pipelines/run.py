#!/usr/bin/env python
"""Thin end-to-end script: load a pipeline config, run it, print the status table.

    python pipelines/run.py configs/default.yaml [--overwrite]

Equivalent to ``lptem run CONFIG``.
"""

from __future__ import annotations

import argparse
import sys

from lptem_dask.config import PipelineConfig, load_config
from lptem_dask.errors import LptemError
from lptem_dask.pipeline import run_pipeline


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    try:
        config = load_config(args.config, PipelineConfig)
        status = run_pipeline(config, config_path=args.config, overwrite=args.overwrite)
    except LptemError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(status.to_string(index=False))
    return 0 if (status["status"] != "failed").all() else 1


if __name__ == "__main__":
    sys.exit(main())
