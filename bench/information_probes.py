"""What each input of the models reveals about the world's hidden state: cross-validated linear probes.

    python bench/information_probes.py --data data/world [--checkpoints lsvcr=DIR,no_align=DIR] [--folds 5]
    (scikit-learn: the dev extra)

**Histories -> a user's taste.**

The synthetic world knows each user's interests a_u (over the primary topics that titles show) and
discussion facet phi_u (over the secondary topics that comments discuss and titles never show); see
harness/simulate/outcomes.py. This asks which history can recover them, before any model is trained:
features are per-user topic histograms of the *training* split (models.histories, the events every
model learns from), the probe is a ridge regression (sklearn RidgeCV, alpha chosen inside each fold)
scored by out-of-fold R^2 over users (K-fold, so no user is scored by a probe that saw them), averaged
over the K topics:
  - `video_primary`: primary topics of engaged videos (what title text reveals);
  - `video_secondary`: secondary topics of engaged videos (what a video's ID embedding can learn from
    co-engagement; an upper bound, since a model must learn each video's topic from data);
  - `video`: both;  `comment`: topics of the engaged comments in comment-history records (what
    LSVCR's comment history adds), plus log(1 + records);  `video+comment`: all of it.
If `video+comment` recovers phi_u hardly better than `video`, the comment history is redundant given
the video history in this world, and an ablation without it cannot fall measurably below full LSVCR.

**Text embeddings -> topics** (with `--checkpoints`). The world's titles are words of the video's
primary topic and its comments words of the comment's topic plus a stance (harness/simulate/vocab.py):
topic is what text can tell a ranker. For each LSVCR checkpoint, the stored title and comment embeddings
(the language model's output after stage 1, or the pre-trained model's with `no_align`) are probed
with multinomial logistic regression (out-of-fold accuracy): title -> primary topic, title -> secondary
topic (chance level by design) and comment -> topic (on a random sample of comments). If the
pre-trained embeddings already separate topics, the alignment stage has nothing to add to them here.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import KFold, cross_val_predict, cross_val_score

from harness.logs.store import LogStore
from harness.simulate.world import World
from models.catalogue import Catalogue
from models.histories import EventLog, prepare_data


def histogram(offsets: np.ndarray, topics: np.ndarray, k: int) -> np.ndarray:
    """(U, k) share of each topic among a user's items (rows of zeros for users without items)."""
    n = np.diff(offsets)
    user = np.repeat(np.arange(n.shape[0]), n)
    out = np.zeros((n.shape[0], k))
    np.add.at(out, (user, topics), 1.0)
    return out / np.maximum(n, 1)[:, None]


def features(log: EventLog, world: World, video_ids: np.ndarray, comment_ids: np.ndarray
             ) -> dict[str, np.ndarray]:
    k = world.config.topics
    vid = video_ids[log.video - 1]  # catalogue index (1-based) -> world id
    prim = histogram(log.video_offsets, world.primary_topic[vid], k)
    sec = histogram(log.video_offsets, world.secondary_topic[vid], k)
    # every engaged comment of each record, grouped by user
    per_record = np.diff(log.positive_offsets)
    record_user = np.repeat(np.arange(log.n_users), log.n_comment_records())
    user_of_positive = np.repeat(record_user, per_record)
    order = np.argsort(user_of_positive, kind="stable")
    c_off = np.concatenate([[0], np.cumsum(np.bincount(user_of_positive, minlength=log.n_users))])
    ctop = world.comment_topic[comment_ids[log.positives[order] - 1]]
    com = np.hstack([histogram(c_off, ctop, k), np.log1p(log.n_comment_records())[:, None]])
    return {"video_primary": prim, "video_secondary": sec, "video": np.hstack([prim, sec]),
            "comment": com, "video+comment": np.hstack([prim, sec, com])}


def probe_r2(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> float:
    """Mean over target columns of the out-of-fold R^2 of a ridge probe."""
    ridge = RidgeCV(alphas=np.logspace(-3, 3, 13))
    pred = cross_val_predict(ridge, x, y, cv=KFold(folds, shuffle=True, random_state=seed))
    ss_res = ((y - pred) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    return float(np.mean(1.0 - ss_res / ss_tot))


def text_topic_accuracy(folder: Path, world: World, cat: Catalogue, folds: int, seed: int,
                        n_comments: int) -> dict[str, float]:
    """Out-of-fold accuracy of topic probes on a checkpoint's stored text embeddings."""
    file = folder / "text_embeddings.safetensors"
    if not file.exists():
        raise SystemExit(f"{folder} has no text_embeddings.safetensors: --checkpoints takes LSVCR checkpoints "
                         "with text (not base, pop or no_text)")
    emb = load_file(str(file))
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(cat.n_comments, min(n_comments, cat.n_comments), replace=False)) + 1
    cv = KFold(folds, shuffle=True, random_state=seed)
    probe = LogisticRegression(max_iter=2000)

    def acc(x: np.ndarray, y: np.ndarray) -> float:
        return round(float(cross_val_score(probe, x, y, cv=cv).mean()), 4)

    titles = emb["title_emb"][1:]
    return {"title_to_primary_topic": acc(titles, world.primary_topic[cat.video_ids]),
            "title_to_secondary_topic": acc(titles, world.secondary_topic[cat.video_ids]),
            "comment_to_topic": acc(emb["comment_emb"][sub], world.comment_topic[cat.comment_ids[sub - 1]]),
            "chance": round(1.0 / world.config.topics, 4)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder of a synthetic world (harness simulate --out)")
    ap.add_argument("--folds", type=int, default=5, help="cross-validation folds over users")
    ap.add_argument("--seed", type=int, default=0, help="seed of the fold assignment and the comment sample")
    ap.add_argument("--checkpoints", default="", help="name=folder pairs of LSVCR checkpoints whose text "
                    "embeddings to probe, comma-separated")
    ap.add_argument("--comment-sample", type=int, default=6000, help="comments in the text probe")
    args = ap.parse_args(argv)
    if args.folds < 2:
        raise SystemExit("--folds must be at least 2")
    pairs = [c.split("=", 1) for c in args.checkpoints.split(",") if c.strip()]
    if any(len(p) != 2 for p in pairs):
        raise SystemExit("--checkpoints takes name=folder pairs, e.g. lsvcr=DIR/lsvcr-0,no_align=DIR/no_align-0")
    t0 = time.perf_counter()
    path = Path(args.data)
    try:
        world = World.load(path)
    except FileNotFoundError as e:
        raise SystemExit(f"{path} holds no synthetic world ({e}); this probe needs the world's hidden state") from e
    with LogStore.open(path) as store:
        prep = prepare_data(store.tables())
    cat, log = prep.catalogue, prep.splits.train
    if not np.array_equal(world.comment_video[cat.comment_ids], cat.video_ids[cat.comment_video[1:] - 1]):
        raise SystemExit(f"the logs in {path} do not match its world (comment -> video differs)")
    users = log.user_ids  # world user ids
    targets = {"discussion_phi": world.discussion[users], "interest_a": world.interest_base[users]}
    feats = features(log, world, cat.video_ids, cat.comment_ids)
    heavy = log.n_comment_records() >= 5
    out: dict = {"bench": "information_probes", "data": str(path), "folds": args.folds, "seed": args.seed,
                 "users": int(log.n_users), "users_5plus_comment_records": int(heavy.sum()), "r2": {}}
    for tname, y in targets.items():
        out["r2"][tname] = {
            group: {f: round(probe_r2(x[mask], y[mask], args.folds, args.seed), 4) for f, x in feats.items()}
            for group, mask in (("all", np.ones(log.n_users, bool)), ("5plus_comment_records", heavy))}
    if pairs:
        out["text_topic_accuracy"] = {name: text_topic_accuracy(Path(folder), world, cat, args.folds, args.seed,
                                                                args.comment_sample) for name, folder in pairs}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
