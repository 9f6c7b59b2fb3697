#!/usr/bin/env python
"""The unchanged ``../shared/tools/score_real.py``, with test-time augmentation on.

``score_real.py`` segments with ``lp.segment`` and its default settings. This script
makes ``lp.segment`` default to ``tta=True`` (the mean maps of the eight rotated and
flipped copies of each frame) and then runs the scorer as it is, so the real-data
figures with and without TTA come from the same code::

    .venv/bin/python benchmarks/score_real_tta.py          # needs ../shared/data/real
"""

from __future__ import annotations

import functools
import runpy
import sys
from pathlib import Path

SCORER = Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "score_real.py"


def main() -> None:
    if not SCORER.is_file():
        sys.exit(f"{SCORER} not found: this benchmark needs the shared real data checkout")
    import lptem_dask as lp

    lp.segment = functools.partial(lp.segment, tta=True)  # type: ignore[assignment]
    sys.argv = [str(SCORER), *sys.argv[1:]]
    runpy.run_path(str(SCORER), run_name="__main__")


if __name__ == "__main__":
    main()
