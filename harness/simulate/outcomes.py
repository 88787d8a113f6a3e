"""What users do with what they are shown: affinities, outcome laws and their exact expectations.

The generator samples from these laws and the oracle takes their expectations, from the same code,
so "the oracle agrees with the logs" tests the sampling, not a second copy of the formulas.

Affinities at time fraction t (see world.py for z, phi):
    video affinity       s_uv(t) = beta_topic z_u(t)[p_v] + beta_disc phi_u[s_v] + beta_quality q_v
    discussion affinity  d_uv(t) = gamma_topic z_u(t)[p_v] + gamma_disc phi_u[s_v]
    comment affinity     a_uc    = delta_disc phi_u[topic_c] + delta_quality q_c

Satiation: a video the user watched before is less attractive again for a while: s_uv is lowered by
satiation_strength exp(-(days since the user's last watch of v) / satiation_days) (0 if never watched).

Examination of a slate v_0..v_{k-1} (`examination`):
    cascade (default): slot 0 is seen; after slot j the user goes on to slot j + 1 with probability
        c_j = sigmoid(continue_bias + continue_beta s_uv + continue_complete [R_j >= 1]), else leaves the
        request. Reaching slot j has probability prod_{i<j} E[c_i], E[c_i] = P(R_i >= 1) sigmoid(b0 + b1 s
        + b2) + P(R_i < 1) sigmoid(b0 + b1 s): exact, top-down, and different for every order of the slate.
        Outcomes at slot j do not depend on earlier slots beyond reaching it, so E[y_j] = P(reach j) E[y_j
        | examined].
    position (world v1): slot j is examined with probability exam_decay^j, independently.
Video outcomes, given the slot is examined:
    R ~ LogNormal(mu, sigma^2), mu = watch_mu + watch_beta s_uv;  watch = D_v min(R, L) (L = loop_max
    plays: loops, as Kuaishou's logs show play time above the duration; L = 1 caps at the duration)
        E[watch] = D_v [ exp(mu + sigma^2/2) Phi((log L - mu - sigma^2)/sigma) + L Phi((mu - log L)/sigma) ]
        (E[R 1{R<L}] = exp(mu + sigma^2/2) Phi((log L - mu - sigma^2)/sigma), P(R >= L) = Phi((mu - log L)/sigma))
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


def satiation(world: World, days_since_watch: np.ndarray) -> np.ndarray:
    """How much re-showing a video lowers its affinity: satiation_strength exp(-days / satiation_days)
    since the user last watched it (0 if never: NaN input)."""
    b = world.config.behaviour
    with np.errstate(invalid="ignore"):
        sat = b.satiation_strength * np.exp(-np.asarray(days_since_watch) / b.satiation_days)
    return np.where(np.isfinite(sat), sat, 0.0)


def watch_mu(world: World, s: np.ndarray) -> np.ndarray:
    b = world.config.behaviour
    return b.watch_mu + b.watch_beta * s


def expected_watch(world: World, s: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """E[D min(R, L)] with R ~ LogNormal(mu(s), sigma^2) (closed form above)."""
    b = world.config.behaviour
    sig, log_l = b.watch_sigma, np.log(b.loop_max)
    mu = watch_mu(world, s)
    return duration * (np.exp(mu + sig**2 / 2) * ndtr((log_l - mu - sig**2) / sig)
                       + b.loop_max * ndtr((mu - log_l) / sig))


def watch_time(world: World, s: np.ndarray, duration: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(watch seconds, completed) for standard-normal draws z: R = exp(mu + sigma z), watch = D min(R, L)."""
    b = world.config.behaviour
    ratio = np.exp(watch_mu(world, s) + b.watch_sigma * z)
    return duration * np.minimum(ratio, b.loop_max), ratio >= 1.0


def p_complete(world: World, s: np.ndarray) -> np.ndarray:
    """P(R >= 1): the video is watched to its end (at least once)."""
    b = world.config.behaviour
    return ndtr(watch_mu(world, s) / b.watch_sigma)


def continue_given(world: World, s: np.ndarray, completed: np.ndarray) -> np.ndarray:
    """Cascade: P(go on to the next slot | affinity, whether the video was watched to its end)."""
    b = world.config.behaviour
    return expit(b.continue_bias + b.continue_beta * s + b.continue_complete * completed)


def p_continue(world: World, s: np.ndarray) -> np.ndarray:
    """Cascade: E[P(go on)] over the watch outcome (exact)."""
    pc = p_complete(world, s)
    return pc * continue_given(world, s, np.ones_like(s)) + (1 - pc) * continue_given(world, s, np.zeros_like(s))


def reach_probs(world: World, s: np.ndarray) -> np.ndarray:
    """P(slot j is examined) for slates with affinities s (R, k), top-down (see the module docstring)."""
    b = world.config.behaviour
    k = s.shape[-1]
    if b.examination == "position":
        return np.broadcast_to(exam_probs(b.exam_decay, k), s.shape).copy()
    reach = np.ones_like(s)
    if k > 1:
        reach[..., 1:] = np.cumprod(p_continue(world, s[..., :-1]), axis=-1)
    return reach


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
    exposure E_c = sum_j P(c at rank j) comment_exam_decay^j under the user's personalised ranking
    (world.comment_exposure[c, world.comment_variant(u, v)]). Pairs are
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
        ex = world.comment_exposure[cid, world.comment_variant(users[pair], videos[pair])]
        watch[start:stop] = np.bincount(pair - start, weights=ex * laws["dwell"], minlength=stop - start)
        inter[start:stop] = np.bincount(pair - start, weights=ex * (laws["p_like"] + laws["p_reply"]),
                                        minlength=stop - start)
        start = stop
    return watch, inter
