"""What users do with what they are shown: affinities, outcome laws and their exact expectations.

The generator samples from these laws and the oracle takes their expectations, from the same code,
so "the oracle agrees with the logs" tests the sampling, not a second copy of the formulas.

Affinities at time fraction t (see world.py for z, phi):
    video affinity       s_uv(t) = beta_topic z_u(t)[p_v] + beta_disc phi_u[s_v] + beta_quality q_v
    discussion affinity  d_uv(t) = gamma_topic z_u(t)[p_v] + gamma_disc phi_u[s_v]
    comment affinity     a_uc    = delta_disc phi_u[topic_c] + delta_quality q_c

Video outcomes, given the slot is examined (P(reach slot j) = exam_decay^j):
    R ~ LogNormal(mu, sigma^2), mu = watch_mu + watch_beta s_uv;  watch = min(D_v, D_v R)
        E[watch] = D_v [ exp(mu + sigma^2/2) Phi(-(mu + sigma^2)/sigma) + Phi(mu/sigma) ]
        (E[R 1{R<1}] = exp(mu + sigma^2/2) Phi((0 - mu - sigma^2)/sigma), P(R >= 1) = Phi(mu/sigma))
    liked ~ Bernoulli(sigmoid(like_bias + like_beta s_uv))
    opened ~ Bernoulli(omega_u sigmoid(open_bias + open_beta d_uv) cq_v)
  drawn independently given the affinities.
Comment outcomes, given the section is opened and rank j is examined (P = comment_exam_decay^j):
    dwell ~ LogNormal(dwell_mu + dwell_beta a_uc, dwell_sigma^2), E = exp(mu + sigma^2/2)
    liked ~ Bernoulli(sigmoid(comment_like_bias + comment_like_beta a_uc))
    replied ~ Bernoulli(sigmoid(reply_bias + reply_beta a_uc + reply_question [stance = question]))
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, log_softmax, ndtr

from harness.simulate.world import World


def interest_z(world: World, users: np.ndarray, tfrac: np.ndarray) -> np.ndarray:
    """z_u(t) = log K + log softmax(a_u + t b_u), (R, K)."""
    logits = world.interest_base[users] + tfrac[:, None] * world.interest_drift[users]
    return np.log(world.config.topics) + log_softmax(logits, axis=1)


def video_affinities(world: World, users: np.ndarray, tfrac: np.ndarray, videos: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(s_uv, d_uv) for users (R,), time fractions (R,) and videos (R,) or (R, n)."""
    b = world.config.behaviour
    z = interest_z(world, users, tfrac)
    vids = videos if videos.ndim == 2 else videos[:, None]
    zp = np.take_along_axis(z, world.primary_topic[vids], axis=1)
    ph = np.take_along_axis(world.discussion[users], world.secondary_topic[vids], axis=1)
    s = b.beta_topic * zp + b.beta_disc * ph + b.beta_quality * world.quality[vids]
    d = b.gamma_topic * zp + b.gamma_disc * ph
    if videos.ndim == 1:
        return s[:, 0], d[:, 0]
    return s, d


def watch_mu(world: World, s: np.ndarray) -> np.ndarray:
    b = world.config.behaviour
    return b.watch_mu + b.watch_beta * s


def expected_watch(world: World, s: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """E[min(D, D R)] with R ~ LogNormal(mu(s), sigma^2) (closed form above)."""
    sig = world.config.behaviour.watch_sigma
    mu = watch_mu(world, s)
    return duration * (np.exp(mu + sig**2 / 2) * ndtr(-(mu + sig**2) / sig) + ndtr(mu / sig))


def p_like(world: World, s: np.ndarray) -> np.ndarray:
    b = world.config.behaviour
    return expit(b.like_bias + b.like_beta * s)


def p_open(world: World, users: np.ndarray, videos: np.ndarray, d: np.ndarray) -> np.ndarray:
    b = world.config.behaviour
    om = world.comment_propensity[users]
    om = om if d.ndim == 1 else om[:, None]
    return om * expit(b.open_bias + b.open_beta * d) * world.comment_quality[videos]


def exam_probs(decay: float, n: int) -> np.ndarray:
    """Position-based examination: P(reach slot j) = decay^j, j = 0..n-1."""
    return decay ** np.arange(n)


def comment_affinity(world: World, users: np.ndarray, comments: np.ndarray) -> np.ndarray:
    """a_uc for paired users (R,) and comments (R,) or (R, m)."""
    b = world.config.behaviour
    cm = comments if comments.ndim == 2 else comments[:, None]
    ph = np.take_along_axis(world.discussion[users], world.comment_topic[cm], axis=1)
    a = b.delta_disc * ph + b.delta_quality * world.comment_quality_c[cm]
    return a if comments.ndim == 2 else a[:, 0]


def comment_laws(world: World, a: np.ndarray, comments: np.ndarray) -> dict[str, np.ndarray]:
    """Per examined comment: dwell log-mean, E[dwell], p_like, p_reply (shapes of `a`)."""
    b = world.config.behaviour
    mu = b.dwell_mu + b.dwell_beta * a
    question = world.comment_stance[comments] == 2
    return {
        "dwell_mu": mu,
        "dwell": np.exp(mu + b.dwell_sigma**2 / 2),
        "p_like": expit(b.comment_like_bias + b.comment_like_beta * a),
        "p_reply": expit(b.reply_bias + b.reply_beta * a + b.reply_question * question),
    }


def comment_section_under_logging(world: World, users: np.ndarray, videos: np.ndarray,
                                  chunk: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """E[comment watch | opened] and E[likes + replies | opened] under the logging comment ranking.

    = sum over the video's comments c of E_c * (E[dwell_uc], p_like_uc + p_reply_uc), with the
    exposure E_c = sum_j P(c at rank j) comment_exam_decay^j (world.comment_exposure). Pairs are
    expanded to (pair, comment) rows in chunks to bound memory.
    """
    users = np.asarray(users, dtype=np.int64).ravel()
    videos = np.asarray(videos, dtype=np.int64).ravel()
    off = world.comment_offsets
    counts = off[videos + 1] - off[videos]
    watch = np.zeros(len(videos))
    inter = np.zeros(len(videos))
    ends = np.cumsum(counts)
    start = 0
    while start < len(videos):
        # take pairs until about `chunk` expanded rows
        stop = int(np.searchsorted(ends, (ends[start - 1] if start else 0) + chunk, side="right"))
        stop = max(stop, start + 1)
        c = counts[start:stop]
        pair = np.repeat(np.arange(start, stop), c)
        first = np.repeat(off[videos[start:stop]], c)
        within = np.arange(len(pair)) - np.repeat(np.cumsum(c) - c, c)
        cid = first + within
        a = comment_affinity(world, users[pair], cid)
        laws = comment_laws(world, a, cid)
        ex = world.comment_exposure[cid]
        watch[start:stop] = np.bincount(pair - start, weights=ex * laws["dwell"], minlength=stop - start)
        inter[start:stop] = np.bincount(pair - start, weights=ex * (laws["p_like"] + laws["p_reply"]),
                                        minlength=stop - start)
        start = stop
    return watch, inter
