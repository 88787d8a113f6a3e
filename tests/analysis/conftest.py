import numpy as np
import pandas as pd
import pytest

from analysis.aggregates import Moments


def batch_moments(columns, x: np.ndarray) -> Moments:
    """Moments of E experiments at once from x (E, n, k): the vectorised path the simulations use."""
    return Moments.from_batch(columns, x)


@pytest.fixture
def ab_frame() -> pd.DataFrame:
    """A small seeded A/B export: arm, four metrics with *_pre covariates, a ratio pair, segments."""
    rng = np.random.default_rng(7)
    n = 4000
    arm = rng.choice(np.array(["control", "treatment"]), n)
    t = (arm == "treatment").astype(float)
    act = rng.choice(np.array(["low", "mid", "high"]), n, p=[0.5, 0.3, 0.2])
    scale = np.where(act == "high", 3.0, np.where(act == "mid", 1.5, 1.0))
    base = rng.gamma(2.0, 30.0, n) * scale
    wt_pre = base * rng.lognormal(0, 0.3, n)
    wt = base * rng.lognormal(0, 0.3, n) * (1 + 0.05 * t)
    vi_pre = rng.poisson(base / 10)
    vi = rng.poisson(base / 10 * (1 + 0.02 * t))
    req = rng.poisson(5 * scale) + 1
    cwt = rng.gamma(1.0, 4.0, n) * req * (1 + 0.1 * t)
    ci = rng.poisson(0.2 * req)
    return pd.DataFrame({
        "user_id": np.arange(n), "arm": arm, "activity": act, "is_new": rng.random(n) < 0.3,
        "watch_time_s": wt, "watch_time_s_pre": wt_pre, "video_interactions": vi.astype(float),
        "video_interactions_pre": vi_pre.astype(float), "comment_watch_time_s": cwt,
        "comment_watch_time_s_pre": rng.gamma(1.0, 4.0, n) * req, "comment_interactions": ci.astype(float),
        "comment_interactions_pre": rng.poisson(0.2 * req).astype(float), "requests": req.astype(float),
    })
