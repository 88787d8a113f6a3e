"""Configuration of the synthetic short-video world: sizes, calendar, logging policy and behaviour.

Two dataclasses: `WorldConfig` (what the CLI exposes: sizes, days, seeds, policy knobs) holds a
`Behaviour` (the coefficients of the generative model, calibrated once to published Kuaishou rates; see
docs/synthetic-world.md for every distribution). Both validate in `__post_init__` and round-trip
through plain JSON dicts, so a dataset folder records exactly the world that produced it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

EPOCH = "2023-10-01T00:00:00"  # day 0 of the logs (KuaiComt was collected in October 2023)
EXAMINATION = ("cascade", "position")
RANDOM_MODES = ("slot", "slate")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _unit(name: str, value: float, *, closed_low: bool = True, closed_high: bool = True) -> None:
    lo_ok = value >= 0 if closed_low else value > 0
    hi_ok = value <= 1 if closed_high else value < 1
    if not (lo_ok and hi_ok):
        raise ValueError(f"{name} must lie in {'[' if closed_low else '('}0, 1{']' if closed_high else ')'}, "
                         f"got {value!r}")


@dataclass(frozen=True)
class Behaviour:
    """Coefficients of the generative model (names match docs/synthetic-world.md)."""

    # users
    interest_scale: float = 1.3  # a_u ~ N(0, interest_scale^2) per topic
    drift_scale: float = 0.8  # b_u ~ N(0, drift_scale^2): logit change over the whole period
    discussion_corr: float = 0.5  # corr(phi_u, standardised a_u): discussion facet vs video interests
    activity_median: float = 2.0  # sessions per day: lambda_u ~ LogNormal(log median, activity_sigma^2)
    activity_sigma: float = 0.8
    requests_per_session_p: float = 0.25  # requests per session ~ Geometric(p) (mean 1/p), capped
    max_requests_per_session: int = 20
    new_user_share: float = 0.2  # share of users who sign up during the logged days
    comment_propensity_a: float = 0.5  # omega_u ~ Beta(a, b)
    comment_propensity_b: float = 1.0
    # videos
    duration_median_s: float = 20.0  # duration ~ LogNormal(log median, duration_sigma^2), clipped
    duration_sigma: float = 0.6
    duration_min_s: float = 5.0
    duration_max_s: float = 180.0
    videos_per_author: float = 5.0
    # uploads: a share of the catalogue is published during the logged days (uniformly over them), the
    # rest before day 0; a video is retrievable from its publish day on, its popularity ramps up as
    # 1 - exp(-age / popularity_ramp_days) and retrieval boosts it by 1 + fresh_boost exp(-age / fresh_days)
    new_video_share: float = 0.3
    popularity_ramp_days: float = 3.0
    fresh_boost: float = 2.0
    fresh_days: float = 2.0
    author_quality_share: float = 0.5  # q_v = sqrt(s) * author quality + sqrt(1-s) * own noise
    popularity_quality: float = 0.8  # log popularity = popularity_quality * q_v + N(0, 1)
    title_words_min: int = 3
    title_words_max: int = 8
    title_filler_share: float = 0.3
    # comments
    comment_count_sigma: float = 1.0  # m_v ~ Poisson(comments_per_video g_v LogNormal(-s^2/2, s^2)): heavy tail
    comment_secondary_share: float = 0.6  # share of comments about the video's secondary topic
    comment_words_min: int = 3
    comment_words_max: int = 10
    comment_filler_share: float = 0.3
    stance_probs: tuple[float, float, float] = (0.55, 0.2, 0.25)  # positive, negative, question
    comment_like_base: float = 1.0  # like_count ~ Poisson(exp(base + lq * q_c + lp * log pop_v))
    comment_like_quality: float = 1.2
    comment_like_popularity: float = 0.4
    # affinity s_uv = beta_topic z_u(t)[p_v] + beta_disc phi_u[s_v] + beta_quality q_v
    beta_topic: float = 0.5
    beta_disc: float = 0.3
    beta_quality: float = 0.3
    # discussion affinity d_uv = gamma_topic z_u(t)[p_v] + gamma_disc phi_u[s_v]
    gamma_topic: float = 0.3
    gamma_disc: float = 1.0
    # comment affinity a_uc = delta_disc phi_u[topic_c] + delta_quality q_c
    delta_disc: float = 0.8
    delta_quality: float = 0.5
    # examination of the feed: "cascade" (a vertical feed: slot 0 is seen, the user goes on to the next
    # slot with a probability that rises with satisfaction, else leaves the request) or "position"
    # (world v1: slot j seen independently with probability exam_decay^j)
    examination: str = "cascade"
    exam_decay: float = 0.9  # position model only: P(reach slot j) = exam_decay^j
    # cascade: P(continue after slot j) = sigmoid(continue_bias + continue_beta s_uv
    #                                             + continue_complete [watched to the end])
    continue_bias: float = 1.2
    continue_beta: float = 0.5
    continue_complete: float = 1.0
    leave_session_p: float = 0.3  # a user who leaves a request early ends the session with this probability
    # satiation: re-showing a video the user watched lowers s_uv by strength exp(-days since / satiation_days)
    satiation_strength: float = 1.0
    satiation_days: float = 1.0
    # video outcomes (given the slot is examined)
    watch_mu: float = -0.5  # R ~ LogNormal(watch_mu + watch_beta s_uv, watch_sigma^2); watch = D min(R, L)
    watch_beta: float = 0.6
    watch_sigma: float = 0.8
    loop_max: float = 3.0  # L: plays of one video at most (loops); 1 = capped at the duration (world v1)
    like_bias: float = -4.0  # p_like = sigmoid(like_bias + like_beta s_uv)
    like_beta: float = 0.8
    open_bias: float = 1.9  # p_open = omega_u * sigmoid(open_bias + open_beta d_uv) * cq_v
    open_beta: float = 1.0
    # comment section
    comment_list_size: int = 10  # comments shown when the section opens (the top of the ranking)
    comment_exam_decay: float = 0.8  # P(reach comment rank j) = comment_exam_decay^j
    comment_score_noise: float = 0.5  # logging comment score = log1p(likes) + 0.5 q_c + N(0, noise^2)
    comment_temperature: float = 1.0
    # personalised comment ranking: comments on the one of the video's two topics the user discusses more
    # (phi_u) get this much more log weight
    comment_personal_boost: float = 1.0
    dwell_mu: float = 0.4  # dwell ~ LogNormal(dwell_mu + dwell_beta a_uc, dwell_sigma^2) seconds
    dwell_beta: float = 0.3
    dwell_sigma: float = 0.6
    comment_like_bias: float = -5.9  # p = sigmoid(bias + beta a_uc)
    comment_like_beta: float = 1.0
    reply_bias: float = -7.1
    reply_beta: float = 0.8
    reply_question: float = 1.0  # questions invite replies
    # logging policy
    score_noise: float = 0.7  # production score = s_uv + N(0, score_noise^2)
    temperature: float = 0.6  # PL weights exp(score / temperature)
    interest_share: float = 0.6  # retrieval mix: interest-matched / popular / uniform random
    popular_share: float = 0.2

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "stance_probs":
                if len(v) != 3 or any(p < 0 for p in v) or abs(sum(v) - 1) > 1e-9:
                    raise ValueError(f"stance_probs must be 3 probabilities summing to 1, got {v!r}")
            elif f.name.endswith(("_share", "_decay", "_corr", "_p")):
                _unit(f.name, v)
            elif f.name.endswith(("_sigma", "_scale", "_median", "_median_s", "temperature", "_a", "_b",
                                  "_min_s", "_max_s", "per_author", "_size", "_noise", "_days")):
                _positive(f.name, v)
        if self.examination not in EXAMINATION:
            raise ValueError(f"examination must be one of {list(EXAMINATION)}, got {self.examination!r}")
        if self.comment_personal_boost < 0:
            raise ValueError(f"comment_personal_boost must be >= 0 (0 = not personalised), got "
                             f"{self.comment_personal_boost!r}")
        if self.satiation_strength < 0:
            raise ValueError(f"satiation_strength must be >= 0 (0 = no satiation), got {self.satiation_strength!r}")
        if self.fresh_boost < 0:
            raise ValueError(f"fresh_boost must be >= 0, got {self.fresh_boost!r}")
        if not self.loop_max >= 1:
            raise ValueError(f"loop_max must be >= 1 (1 = no loops), got {self.loop_max!r}")
        if self.interest_share + self.popular_share > 1:
            raise ValueError("interest_share + popular_share must be <= 1 (the rest is uniform random)")
        if self.requests_per_session_p == 0:
            raise ValueError("requests_per_session_p must be > 0")
        if self.duration_min_s >= self.duration_max_s:
            raise ValueError("duration_min_s must be < duration_max_s")
        if not 1 <= self.title_words_min <= self.title_words_max:
            raise ValueError("need 1 <= title_words_min <= title_words_max")
        if not 1 <= self.comment_words_min <= self.comment_words_max:
            raise ValueError("need 1 <= comment_words_min <= comment_words_max")
        if self.max_requests_per_session < 1:
            raise ValueError("max_requests_per_session must be >= 1")


@dataclass(frozen=True)
class WorldConfig:
    """Sizes, calendar, logging-policy knobs and seed of one synthetic world.

    Defaults give the default small world (1,000 users, 3,000 videos, ~60,000 comments, 14 days of
    which the first 7 are the pre-period: ~510k impressions, ~52 per active user-day).
    """

    users: int = 1000
    videos: int = 3000
    comments_per_video: float = 20.0
    days: int = 14
    pre_days: int | None = None  # default: days // 2
    random_share: float = 0.0037  # "slot": share of impressions; "slate": share of requests
    random_mode: str = "slot"  # slot: single slots from a catalogue-wide pool (KuaiRand); slate: whole slates
    slate_size: int = 6
    candidates: int = 50
    topics: int = 20
    seed: int = 0
    chunk_users: int = 1024  # generation chunk (memory bound); part of the config, so results are stable
    behaviour: Behaviour = field(default_factory=Behaviour)

    def __post_init__(self) -> None:
        from harness.simulate.vocab import TOPICS

        if isinstance(self.behaviour, dict):
            object.__setattr__(self, "behaviour", Behaviour(**_tuple_fields(self.behaviour)))
        for name in ("users", "videos", "days", "slate_size", "candidates", "topics", "chunk_users"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.comments_per_video < 0:
            raise ValueError(f"comments_per_video must be >= 0, got {self.comments_per_video!r}")
        if self.pre_days is None:
            object.__setattr__(self, "pre_days", self.days // 2)
        assert self.pre_days is not None
        if not 0 <= self.pre_days < self.days:
            raise ValueError(f"pre_days must lie in [0, days={self.days}), got {self.pre_days!r}")
        _unit("random_share", self.random_share)
        if self.random_mode not in RANDOM_MODES:
            raise ValueError(f"random_mode must be one of {list(RANDOM_MODES)}, got {self.random_mode!r}")
        if self.random_mode == "slot" and self.random_share > 0 and self.videos <= self.candidates:
            raise ValueError("random_mode='slot' draws from videos outside the candidate set: need videos > "
                             "candidates")
        old_videos = self.videos - int(round(self.behaviour.new_video_share * self.videos))
        if self.candidates > old_videos:
            raise ValueError(f"candidates ({self.candidates}) must be <= the videos published before day 0 "
                             f"({old_videos} of {self.videos}): raise --videos or lower --candidates")
        if self.slate_size > self.candidates:
            raise ValueError(f"slate_size ({self.slate_size}) must be <= candidates ({self.candidates})")
        if self.candidates > self.videos:
            raise ValueError(f"candidates ({self.candidates}) must be <= videos ({self.videos}): "
                             "lower --candidates or raise --videos")
        if not 2 <= self.topics <= len(TOPICS):
            raise ValueError(f"topics must lie in [2, {len(TOPICS)}] (the vocabularies in vocab.py), "
                             f"got {self.topics}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorldConfig:
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown world config keys: {sorted(unknown)}")
        beh = d.pop("behaviour", {}) or {}
        return cls(**d, behaviour=Behaviour(**_tuple_fields(beh)))


def _tuple_fields(d: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(Behaviour)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown behaviour keys: {sorted(unknown)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
