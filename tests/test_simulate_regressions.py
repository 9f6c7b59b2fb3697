import numpy as np

from lptem_dask.simulate import simulate_one


def test_unattainable_target_cnr_does_not_overflow_the_poisson_sampler():
    # index 6 of the mixed preset at seed 1 asked for an unbounded dose
    # (numpy: "lam value too large"); the dose is now capped
    r = simulate_one(6, "mixed", seed=1)
    assert np.isfinite(r["image"]).all()
    assert r["mask"].any()
