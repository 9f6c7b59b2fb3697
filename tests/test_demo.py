"""The demo's truth-vs-recovered summary reads D and its interval from the store."""

from __future__ import annotations

import json
import math

from lptem_dask.demo import _recovered_d


def test_recovered_d_reads_the_translation_fit_and_interval(tmp_path):
    store = tmp_path / "v.zarr"
    assert _recovered_d(store) is None  # not analysed (a failed video)
    path = store / "results" / "diffusion"
    path.mkdir(parents=True)
    fit = {"D": 176.7, "ci_low": 150.2, "ci_high": 201.9, "sigma": 1.0}
    (path / "diffusion.json").write_text(json.dumps({"translation": fit, "n_particles": 3}))
    assert _recovered_d(store) == (176.7, 150.2, 201.9)
    (path / "diffusion.json").write_text(json.dumps({"translation": {"D": 5.0}}))
    d, lo, hi = _recovered_d(store)
    assert d == 5.0 and math.isnan(lo) and math.isnan(hi)
