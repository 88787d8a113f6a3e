"""How much ranking quality the synthetic world allows: oracle rankers on the stored test candidates.

    python bench/oracle_ceiling.py --data data/world [--split test]

Prints one JSON line with NDCG@10 / Recall@10 / MRR@10 of rankers that read the world's hidden truth
(harness.simulate), scored on exactly the candidates and labels `bench/quality.py` uses
(models.evaluation). They bound what any model trained on the logs can reach, and split a task's
signal into its parts, so a model's gap to the production rule can be read against the headroom.

Comment task (a positive = a comment the user read >= 3 s, liked or replied to; histories.py):
  P(engaged) = E_c * P(engaged | examined, a_uc), with the exposure E_c = sum_j P(c at rank j) 0.8^j
  under the logging comment ranking (exact, world.comment_exposure) and, given examination,
  1 - P(dwell < 3 s) (1 - p_like) (1 - p_reply), all functions of a_uc = 0.8 phi_u[topic_c] + 0.5 q_c.
  - `oracle`: ranks by P(engaged)             (the Bayes ranking for expected hits)
  - `exposure`: E_c alone                     (best non-personal rule; like count is its main input)
  - `affinity`: P(engaged | examined) alone   (personal taste without position bias)
  - `like_count`: the production rule base and pop use.
Video task (a positive = the next engaged video): the logging pipeline makes v the next engaged video
  with probability ~ P(v retrieved) x P(v shown | retrieved) x P(engaged | shown):
  - `oracle`: r_uv(t) exp(s_uv(t) / 0.6) P(engaged | s_uv, D_v), with the retrieval rate
    r = 0.6 pi_u(t)[p_v] pop_v / pop(p_v) + 0.2 pop_v / pop + 0.2 / V and the Plackett-Luce weight
    (an approximation of the slate marginal, exact to first order when the weight is small);
  - `oracle_without_discussion`: the same without the discussion facet phi_u[s_v] in s_uv, i.e. what
    is left when nothing is known of what comment histories reveal;
  - `affinity`: s_uv(t) alone; `retrieval`: r_uv(t) alone; `popularity`: pop_v.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import expit, ndtr

from harness.logs.store import LogStore
from harness.simulate import outcomes as oc
from harness.simulate.world import World
from models.evaluation import load_or_sample_candidates, pad_ragged
from models.histories import prepare_data
from models.metrics import mean_metrics, ranking_metrics

METRICS = ("ndcg@10", "recall@10", "mrr@10", "ndcg@5")


def comment_scores(world: World, users: np.ndarray, cand: np.ndarray) -> dict[str, np.ndarray]:
    b = world.config.behaviour
    c = np.where(cand >= 0, cand, 0)
    a = oc.comment_affinity(world, users, c)
    laws = oc.comment_laws(world, a, c)
    p_dwell = 1.0 - ndtr((np.log(3.0) - laws["dwell_mu"]) / b.dwell_sigma)
    p_eng = 1.0 - (1.0 - p_dwell) * (1.0 - laws["p_like"]) * (1.0 - laws["p_reply"])
    # the logging ranking the user saw under that video (world v2 personalises it: comment_variant)
    variant = world.comment_variant(users, world.comment_video[c[:, 0]])  # a query's candidates share a video
    ex = world.comment_exposure[c, variant[:, None]]
    return {"oracle": ex * p_eng, "exposure": ex, "affinity": p_eng,
            "like_count": world.comment_likes[c].astype(np.float64)}


def video_scores(world: World, users: np.ndarray, tfrac: np.ndarray, cand: np.ndarray) -> dict[str, np.ndarray]:
    b = world.config.behaviour
    v = np.where(cand >= 0, cand, 0)
    s, _ = oc.video_affinities(world, users, tfrac, v)
    z = oc.interest_z(world, users, tfrac)
    pi = np.exp(z - np.log(world.config.topics))  # (R, K) interests
    pop = world.popularity
    topic_pop = np.bincount(world.primary_topic, weights=pop, minlength=world.config.topics)
    p = world.primary_topic[v]
    r = (b.interest_share * np.take_along_axis(pi, p, 1) * pop[v] / topic_pop[p]
         + b.popular_share * pop[v] / pop.sum() + (1 - b.interest_share - b.popular_share) / world.n_videos)
    dur = world.duration_s[v]
    # engaged = watch >= min(D, 10 s) or like; watch = min(D, D R), R ~ LogNormal(mu(s), sigma^2)
    thr = np.minimum(1.0, 10.0 / dur)
    p_watch = 1.0 - ndtr((np.log(thr) - oc.watch_mu(world, s)) / b.watch_sigma)
    pl = expit(b.like_bias + b.like_beta * s)
    p_eng = 1.0 - (1.0 - p_watch) * (1.0 - pl)
    # the same oracle blind to the discussion facet phi_u (what comment histories reveal beyond the
    # titles of watched videos): how much of the video task's ceiling that facet is worth
    ph = np.take_along_axis(world.discussion[users], world.secondary_topic[v], axis=1)
    s0 = s - b.beta_disc * ph
    p_watch0 = 1.0 - ndtr((np.log(thr) - oc.watch_mu(world, s0)) / b.watch_sigma)
    p_eng0 = 1.0 - (1.0 - p_watch0) * (1.0 - expit(b.like_bias + b.like_beta * s0))
    return {"oracle": r * np.exp(s / b.temperature) * p_eng, "oracle_without_discussion": r * np.exp(s0 / b.temperature) * p_eng0,
            "affinity": s, "retrieval": r, "popularity": pop[v]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a synthetic world folder (harness simulate --out)")
    ap.add_argument("--split", default="test", choices=("valid", "test"))
    ap.add_argument("--workdir", default=None, help="folder of the stored candidates (default: --data's parent)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    data = Path(args.data)
    world = World.load(data)
    with LogStore.open(data) as s:
        tables = s.tables()
    prep = prepare_data(tables)
    catalogue, splits = prep.catalogue, prep.splits
    cands = load_or_sample_candidates(splits, catalogue, Path(args.workdir) if args.workdir else data.parent)
    epoch_s = world.epoch.astype("datetime64[s]").astype(np.int64)
    out: dict = {"bench": "oracle_ceiling", "data": str(data), "split": args.split}
    for task in ("video", "comment"):
        rows = cands.rows(args.split, task)
        users = rows["user_id"].to_numpy(np.int64)
        cand = pad_ragged([np.asarray(c, np.int64) for c in rows["candidates"]], -1)
        labels = pad_ragged([np.asarray(x, bool) for x in rows["labels"]], False)
        valid = cand >= 0
        if task == "video":
            tfrac = (rows["time"].to_numpy(np.float64) - epoch_s) / (86400.0 * world.config.days)
            scores = video_scores(world, users, tfrac, cand)
        else:
            scores = comment_scores(world, users, cand)
        out[task] = {"n_queries": len(rows)}
        for name, sc in scores.items():
            m = mean_metrics(ranking_metrics(np.where(valid, sc, -np.inf), labels, valid, METRICS))
            out[task][name] = {k: round(float(v), 4) for k, v in m.items()}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
