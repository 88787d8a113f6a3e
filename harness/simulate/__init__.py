"""The synthetic short-video world with ground truth.

A documented generative model (every distribution: docs/synthetic-world.md and the docstrings of
world.py, policy.py, outcomes.py, generate.py): users with drifting topic interests and a discussion
facet, videos with titles from their primary topic, comments (mostly about a secondary topic the title
never shows), a Plackett-Luce logging policy with exact marginal propensities, a random-exposure
slice, position-based examination, and an oracle that knows every expectation.

    from harness.simulate import WorldConfig, simulate, World, Oracle
    path, summary = simulate(WorldConfig(seed=0), "data/world")
    oracle = Oracle.from_dataset(path)
"""

from harness.simulate.config import Behaviour, WorldConfig
from harness.simulate.generate import Summary, generate, simulate
from harness.simulate.oracle import METRICS, Oracle
from harness.simulate.world import World

__all__ = ["Behaviour", "METRICS", "Oracle", "Summary", "World", "WorldConfig", "generate", "simulate"]
