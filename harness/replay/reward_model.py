"""The reward model of the direct and doubly robust estimators: a cascade fitted on the logs, cross-fitted.

A vertical feed is a cascade: slot j is seen only if the user went on past every slot above it. The
model has two parts per (request, video), both fitted on the logged slots that were played
(`watch_time_s > 0`, the reach the logs reveal):
* f_m(x, v) = E[reward m of the slot | the slot is played], for each metric m;
* c(x, v) = P(the user goes on to the next slot | this slot is played) (fitted on slots above the last).
The expected value of any slate v_0..v_{k-1} is then sum_j prod_{i<j} c(v_i) f_m(v_j) (`slate_value`).

Features (never the models under test, so DM and DR do not favour either arm): the logging policy's
score of the video for this request (`candidates.logging_score`, when logged), the video's duration,
the video's and the user's rates before the replay window (mean watch time, like, comment-opening,
comment time and comment-interaction rates, and counts). Gradient-boosted trees
(scikit-learn's HistGradientBoosting*, which takes missing features as they come).

Cross-fitting: users are split into `folds` groups by a hash of the user id; the model that predicts for
a user's requests never saw that user's replayed requests, so the DR correction term is not fitted to
its own noise. `fit_report` gives the held-out error per outcome (RMSE and R^2 against the constant
model for f; log loss and Brier score for c).

Limits: the comment metrics' f is learnt under the LOGGING comment ranking, so DM's comment metrics
ignore how a target ranks comments (DR corrects this through the nested importance weights).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.replay.data import ReplayData

METRICS = ("watch_time_s", "video_interactions", "comment_watch_time_s", "comment_interactions")
CONTINUE = "continue"
STAT_COLS = ("watch_time_s", "liked", "opened_comments", "comment_watch_time_s")


@dataclass
class Features:
    """Feature lookups for (request row, video id) pairs."""

    duration: pd.Series  # video_id -> seconds
    video_stats: pd.DataFrame  # video_id -> pre-window rates
    user_stats: pd.DataFrame  # user_id -> pre-window rates

    def matrix(self, data: ReplayData, rows: np.ndarray, videos: np.ndarray, logging_score: np.ndarray | None
               ) -> np.ndarray:
        """(N, F) features of pairs (rows[i], videos[i])."""
        cols = [np.full(len(rows), np.nan) if logging_score is None else logging_score,
                self.duration.reindex(videos).to_numpy(np.float64)]
        vs = self.video_stats.reindex(videos).to_numpy(np.float64)
        us = self.user_stats.reindex(data.user_id[rows]).to_numpy(np.float64)
        return np.column_stack([*cols, vs, us])


def build_features(store, data: ReplayData) -> Features:
    """Per-video and per-user rates from the logs before the replay window (none of the window)."""
    params = [data.window_start.astype("datetime64[us]").item()]
    agg = ", ".join(f"avg(i.{c}::DOUBLE) AS {c}" for c in STAT_COLS)
    v = store.query(f"SELECT i.video_id, count(*) AS n, {agg} FROM impressions i JOIN requests r USING (request_id) "
                    "WHERE r.ts < ? GROUP BY 1", params).to_pandas().set_index("video_id")
    u = store.query(f"SELECT r.user_id, count(*) AS n, {agg} FROM impressions i JOIN requests r USING (request_id) "
                    "WHERE r.ts < ? GROUP BY 1", params).to_pandas().set_index("user_id")
    ci = store.query("SELECT r.user_id, avg((c.liked::INT + c.replied::INT)::DOUBLE) AS comment_rate "
                     "FROM comment_impressions c JOIN requests r USING (request_id) WHERE r.ts < ? GROUP BY 1",
                     params).to_pandas().set_index("user_id")
    u = u.join(ci, how="left")
    dur = store.query("SELECT video_id, duration_s FROM videos").to_pandas().set_index("video_id")["duration_s"]
    return Features(dur, v, u)


@dataclass
class CascadeModel:
    """Cross-fitted predictions for every candidate and every logged slot of the window."""

    cand: dict[str, np.ndarray]  # outcome -> (R, n)
    logged: dict[str, np.ndarray]  # outcome -> (R, k)
    report: list[dict[str, float | str]]


def cascade_value(f: np.ndarray, c: np.ndarray) -> np.ndarray:
    """sum_j prod_{i<j} c_i f_j along the last axis (the cascade's expected slate value)."""
    reach = np.cumprod(np.concatenate([np.ones(c.shape[:-1] + (1,)), c[..., :-1]], axis=-1), axis=-1)
    return (reach * f).sum(axis=-1)


def user_folds(user_id: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold of each user: a stable hash of (seed, user id), independent of row order."""
    x = (user_id.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(seed * 0x85EBCA6B + 1)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(29)
    return (x % np.uint64(folds)).astype(np.int64)


def _logged_scores(data: ReplayData) -> np.ndarray | None:
    """The logging score of each logged slot's video (nan for videos outside the candidates), flat (R*k,)."""
    if data.logging_score is None:
        return None
    eq = data.video[:, :, None] == data.candidates[:, None, :]
    return np.where(eq.any(2), np.take_along_axis(data.logging_score, eq.argmax(2), 1), np.nan).ravel()


@dataclass
class CascadeFit:
    """The fitted per-fold models (fold f's model never saw fold f's users); `predict` serves any batch of
    the window, so the models are fitted once and requests are predicted batch by batch."""

    features: Features
    models: dict[str, list]  # outcome -> one fitted model per fold
    folds: int
    seed: int
    report: list[dict[str, float | str]]

    def predict(self, data: ReplayData, need: np.ndarray | None = None) -> CascadeModel:
        """Cross-fitted predictions for every logged slot of `data` (any subset of the window's users: each
        user's rows go to the model of the folds without that user) and for its candidates: all of them, or
        with `need` ((R, n) bool) only those (nan elsewhere; a candidate's prediction does not depend on which
        others are predicted)."""
        R, k = data.video.shape
        n = data.candidates.shape[1]
        cells = np.arange(R * n) if need is None else np.flatnonzero(np.asarray(need, bool).ravel())
        X_logged = self.features.matrix(data, np.repeat(np.arange(R), k), data.video.ravel(), _logged_scores(data))
        X_cand = self.features.matrix(data, cells // n, data.candidates.ravel()[cells],
                                      None if data.logging_score is None else data.logging_score.ravel()[cells])
        fold_req = user_folds(data.user_id, self.folds, self.seed)
        fold_k, fold_c = np.repeat(fold_req, k), fold_req[cells // n]
        part = {o: np.empty(len(cells)) for o in self.models}
        logged = {o: np.empty(R * k) for o in self.models}
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=tree_threads(), user_api="openmp"):
            self._predict_into(X_logged, X_cand, fold_k, fold_c, part, logged)
        cand = {}
        for o, v in part.items():
            cand[o] = np.full(R * n, np.nan)
            cand[o][cells] = v
        return CascadeModel({o: v.reshape(R, n) for o, v in cand.items()},
                            {o: v.reshape(R, k) for o, v in logged.items()}, self.report)

    def _predict_into(self, X_logged, X_cand, fold_k, fold_c, cand, logged) -> None:
        for o, per_fold in self.models.items():
            for f, model in enumerate(per_fold):
                for X, fold, out in ((X_logged, fold_k, logged[o]), (X_cand, fold_c, cand[o])):
                    sel = fold == f
                    if sel.any():
                        out[sel] = _predict(model, o, X[sel])


def _predict(model, outcome: str, X: np.ndarray) -> np.ndarray:
    if outcome == CONTINUE:
        return model.predict_proba(X)[:, 1]
    return np.maximum(model.predict(X), 0.0)


def tree_threads() -> int:
    """OpenMP threads for the gradient-boosted trees, chosen at the time of the run: every core on an idle
    machine, one on a busy one. Measured on 2 cores: at load ~1, two threads fit 1.3x faster than one; at load
    ~6, two OpenMP threads spin against the other processes and a fit took 85 s instead of 3 s. OMP_NUM_THREADS
    caps it (a Ray actor's CPUs: `harness.replay.ray_engine`)."""
    cores = os.cpu_count() or 1
    cap = os.environ.get("OMP_NUM_THREADS", "")
    if cap.isdigit() and int(cap) >= 1:
        cores = min(cores, int(cap))
    return cores if os.getloadavg()[0] < cores - 0.5 else 1


def fit_cascade(store, data: ReplayData, *, folds: int = 2, seed: int = 0, max_iter: int = 100) -> CascadeFit:
    """Fit f_m and c per fold (each fold's model on the other folds' users); the held-out fit report."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=tree_threads(), user_api="openmp"):
        return _fit(store, data, folds=folds, seed=seed, max_iter=max_iter)


def _fit(store, data: ReplayData, *, folds: int, seed: int, max_iter: int) -> CascadeFit:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    feats = build_features(store, data)
    R, k = data.video.shape
    X_logged = feats.matrix(data, np.repeat(np.arange(R), k), data.video.ravel(), _logged_scores(data))
    fold_k = np.repeat(user_folds(data.user_id, folds, seed), k)
    played = data.examined.ravel()
    nxt = np.zeros((R, k), bool)
    nxt[:, :-1] = data.examined[:, 1:]
    has_next = np.zeros((R, k), bool)
    has_next[:, :-1] = True
    targets = {m: data.rewards[m].ravel() for m in METRICS}
    models: dict[str, list] = {}
    report: list[dict[str, float | str]] = []
    for o in (*METRICS, CONTINUE):
        held: list[tuple[np.ndarray, np.ndarray]] = []
        models[o] = []
        for f in range(folds):
            train = (fold_k != f) & played
            test = (fold_k == f) & played
            if o == CONTINUE:
                train &= has_next.ravel()
                test &= has_next.ravel()
                y = nxt.ravel()
                model = HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed)
            else:
                y = targets[o]
                model = HistGradientBoostingRegressor(max_iter=max_iter, random_state=seed)
            model.fit(X_logged[train], y[train])
            models[o].append(model)
            held.append((y[test].astype(np.float64), _predict(model, o, X_logged[test])))
        report.append(_fit_row(o, held))
    return CascadeFit(feats, models, folds, seed, report)


def _fit_row(outcome: str, held: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float | str]:
    y = np.concatenate([h[0] for h in held])
    p = np.concatenate([h[1] for h in held])
    if outcome == CONTINUE:
        pc = np.clip(p, 1e-6, 1 - 1e-6)
        base = np.clip(y.mean(), 1e-6, 1 - 1e-6)
        return {"outcome": outcome, "held_out_rows": int(len(y)),
                "log_loss": float(-(y * np.log(pc) + (1 - y) * np.log(1 - pc)).mean()),
                "log_loss_constant": float(-(y * np.log(base) + (1 - y) * np.log(1 - base)).mean()),
                "brier": float(((p - y) ** 2).mean())}
    rmse = float(np.sqrt(((p - y) ** 2).mean()))
    var = float(y.var())
    return {"outcome": outcome, "held_out_rows": int(len(y)), "rmse": rmse,
            "r2": float(1 - rmse**2 / var) if var > 0 else float("nan")}
