"""The static world: topics, users, videos (with titles), comments (with text) and their hidden truth.

Generative model (every distribution; docs/synthetic-world.md has the full account):

Topics k = 1..K (K = 20 by default), each with a hand-written vocabulary (vocab.py).

Users u (ids 0..N-1):
* interests over topics drift slowly: pi_u(t) = softmax(a_u + t b_u), t = time / logged period in
  [0, 1), a_u ~ N(0, interest_scale^2 I), b_u ~ N(0, drift_scale^2 I). The centred log-interest
  z_u(t) = log K + log pi_u(t) enters affinities.
* a discussion facet phi_u = rho * standardise(a_u) + sqrt(1 - rho^2) * xi_u, xi_u ~ N(0, I): what the
  user likes to *talk about*; it drives comment opening and comment engagement much more than watching.
* activity lambda_u ~ LogNormal(log activity_median, activity_sigma^2) sessions per day;
* comment propensity omega_u ~ Beta(0.5, 1): about a fifth of users below 0.05 (rarely open comments),
  half above 0.25;
* signup day: a share new_user_share signs up uniformly during the logged days, the rest
  uniformly 1..730 days before.

Videos v (ids 0..V-1): publish day: the last new_video_share (30%) of the ids are uploaded during the
logged days (uniformly over them, ids in publish order), the rest 1..365 days before day 0;
primary topic p_v ~ Uniform(K); secondary topic s_v ~ Uniform(K minus p_v);
author ~ Uniform(V / videos_per_author authors); quality q_v = sqrt(s) A_author + sqrt(1-s) eps,
A, eps ~ N(0, 1); duration ~ LogNormal(log 20 s, 0.6^2) clipped to [5, 180] s; popularity
pop_v = exp(popularity_quality q_v + N(0, 1)). The title has 3..8 words, each a filler with prob. 0.3,
else a word of the *primary* topic only: the secondary topic never shows in the title.

Comments c under v: count m_v ~ Poisson(comments_per_video * g_v), g_v = sqrt(pop_v) / mean sqrt(pop)
(capped at 200); topic_c = s_v with prob. comment_secondary_share else p_v; stance ~ Categorical
(positive, negative, question); text = one stance word + 3..10 words (fillers with prob. 0.3, else
words of topic_c); quality q_c ~ N(0, 1); like_count ~ Poisson(exp(1.0 + 1.2 q_c + 0.4 log pop_v)).
Video comment-section quality cq_v = (1 - exp(-m_v / 4)) sigmoid(mean_c q_c + 0.5) (0 without comments).

Logging comment ranking: score_c = log1p(like_count) + 0.5 q_c + N(0, comment_score_noise^2) (fixed per
comment), Plackett-Luce with weights exp(score_c / comment_temperature); the top
L = min(m_v, comment_list_size) are shown. Its exact marginals P(c at rank j) are computed once here
(the subset recursion for sections of <= 12 comments, the quadrature above; plackett_luce.py) and give
the per-comment exposure E_c = sum_j P(c at j) comment_exam_decay^j used by the oracle.

Text is built as Arrow string arrays from token ids, TEXT_BLOCK rows at a time with one random stream
per block (no Python string per word or per row), so its memory is bounded by a block.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from harness.simulate import plackett_luce as pl
from harness.simulate.config import EPOCH, WorldConfig
from harness.simulate.vocab import FILLERS, STANCE_WORDS, STANCES, TOPICS, topic_names

CONFIG_FILE = "world/config.json"
ARRAYS_FILE = "world/arrays.npz"
FORMAT_VERSION = 2  # 2: world v2 (cascade feed, loops, random slots, uploads, satiation, personalised comments)
MAX_COMMENTS_PER_VIDEO = 1000
SUBSET_MAX_COMMENTS = 12  # exact subset recursion up to here (measured: cheaper than quadrature)

USER_ARRAYS = ("interest_base", "interest_drift", "discussion", "comment_propensity", "activity",
               "signup_day")
VIDEO_ARRAYS = ("primary_topic", "secondary_topic", "quality", "duration_s", "popularity", "author",
                "comment_quality", "comment_offsets", "publish_day")
COMMENT_ARRAYS = ("comment_video", "comment_topic", "comment_quality_c", "comment_stance",
                  "comment_likes", "comment_score", "comment_exposure")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


TEXT_BLOCK = 1 << 16  # rows of text built per block (one random stream per block: bounded memory)
QUESTION_MARK = "?"


class _Vocab:
    """All words of the world as one token table: topic words, fillers, stance words and "?".

    Text is built as Arrow string arrays straight from token ids (no Python string per word or per
    row): each token id has a padded byte row, with and without a leading space.
    """

    def __init__(self, topics: tuple[str, ...]) -> None:
        words: list[str] = []
        self.topic_start = np.zeros(len(topics), dtype=np.int64)
        self.topic_size = np.zeros(len(topics), dtype=np.int64)
        for i, name in enumerate(topics):
            self.topic_start[i], self.topic_size[i] = len(words), len(TOPICS[name])
            words += TOPICS[name]
        self.filler_start, self.filler_size = len(words), len(FILLERS)
        words += FILLERS
        self.stance_start = np.zeros(len(STANCES), dtype=np.int64)
        self.stance_size = np.zeros(len(STANCES), dtype=np.int64)
        for i, st in enumerate(STANCES):
            self.stance_start[i], self.stance_size[i] = len(words), len(STANCE_WORDS[st])
            words += STANCE_WORDS[st]
        self.question = len(words)
        words.append(QUESTION_MARK)
        self.words = tuple(words)
        enc = [w.encode() for w in words]
        width = max(len(b) for b in enc) + 1
        # row 2 i: word i; row 2 i + 1: " " + word i
        self.bytes = np.zeros((2 * len(enc), width), dtype=np.uint8)
        self.length = np.zeros(2 * len(enc), dtype=np.int64)
        for i, b in enumerate(enc):
            for lead, text in ((0, b), (1, b" " + b)):
                self.bytes[2 * i + lead, : len(text)] = np.frombuffer(text, dtype=np.uint8)
                self.length[2 * i + lead] = len(text)

    def join(self, tokens: np.ndarray) -> pa.StringArray:
        """One string per row of `tokens` (R, T): its ids >= 0 joined by single spaces, "?" glued on.

        -1 marks no token (trailing or not). Vectorised: gather padded byte rows, keep the bytes
        within each token's length (row-major order = the concatenation).
        """
        tokens = np.asarray(tokens, dtype=np.int64)
        valid = tokens >= 0
        first = np.cumsum(valid, axis=1) == 1
        lead = valid & ~first & (tokens != self.question)
        rows = 2 * np.where(valid, tokens, 0) + lead
        nbytes = np.where(valid, self.length[rows], 0)
        offsets = np.zeros(tokens.shape[0] + 1, dtype=np.int64)
        np.cumsum(nbytes.sum(axis=1), out=offsets[1:])
        if offsets[-1] >= 2**31:
            raise ValueError("text block over 2 GiB; lower TEXT_BLOCK")
        sel = rows[valid]
        keep = np.arange(self.bytes.shape[1])[None, :] < self.length[sel][:, None]
        data = self.bytes[sel][keep]
        return pa.StringArray.from_buffers(tokens.shape[0], pa.py_buffer(offsets.astype(np.int32)),
                                           pa.py_buffer(data))

    def body_tokens(self, rng: np.random.Generator, topic_ids: np.ndarray, nmin: int, nmax: int,
                    filler_share: float) -> np.ndarray:
        """Token ids (R, nmax), -1 past each row's length: nmin..nmax words, each a filler with prob.
        filler_share, else a uniform word of the row's topic (at least one topical word per row)."""
        n = len(topic_ids)
        lengths = rng.integers(nmin, nmax + 1, size=n)
        is_filler = rng.random((n, nmax)) < filler_share
        u = rng.random((n, nmax))
        cols = np.arange(nmax)[None, :]
        past = cols >= lengths[:, None]
        all_filler = (is_filler | past).all(axis=1)
        is_filler[all_filler, 0] = False
        t = topic_ids[:, None]
        topical = self.topic_start[t] + (u * self.topic_size[t]).astype(np.int64)
        filler = self.filler_start + (u * self.filler_size).astype(np.int64)
        return np.where(past, -1, np.where(is_filler, filler, topical))

    def stance_tokens(self, rng: np.random.Generator, stance: np.ndarray) -> np.ndarray:
        """A uniform word of each row's stance (R,)."""
        u = rng.random(len(stance))
        return self.stance_start[stance] + (u * self.stance_size[stance]).astype(np.int64)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (readable by np.load(allow_pickle=False)) with fixed zip timestamps, so identical
    arrays give identical bytes (np.savez stamps the current time). Integer arrays are deflated;
    float arrays are stored (random doubles shrink by a few percent at the cost of most of the write
    time)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(arrays):
            arr = np.ascontiguousarray(arrays[name])
            if arr.dtype == object:
                raise TypeError(f"world array {name!r} has dtype object; only numeric arrays are stored")
            one = io.BytesIO()
            np.lib.format.write_array(one, arr, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED if arr.dtype.kind == "f" else zipfile.ZIP_DEFLATED
            zf.writestr(info, one.getvalue())
    return buf.getvalue()


@dataclass
class World:
    """All hidden parameters of one world; `titles` / `comment_texts` (Arrow string arrays, one row per
    video / comment id) exist only on a freshly built one."""

    config: WorldConfig
    arrays: dict[str, np.ndarray]
    titles: pa.ChunkedArray | None = None
    comment_texts: pa.ChunkedArray | None = None
    _comment_marginals: dict[int, np.ndarray] | None = field(default=None, repr=False)

    # -- convenience views ---------------------------------------------------------------------
    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays")
        if arrays is not None and name in arrays:
            return arrays[name]
        raise AttributeError(name)

    @property
    def n_users(self) -> int:
        return int(self.arrays["activity"].shape[0])

    @property
    def n_videos(self) -> int:
        return int(self.arrays["duration_s"].shape[0])

    @property
    def n_comments(self) -> int:
        return int(self.arrays["comment_video"].shape[0])

    @property
    def topic_names(self) -> tuple[str, ...]:
        return topic_names(self.config.topics)

    @property
    def epoch(self) -> np.datetime64:
        return np.datetime64(EPOCH, "us")

    @cached_property
    def _publish_sorted(self) -> np.ndarray:
        return np.sort(self.publish_day)

    def published_by(self, day: np.ndarray) -> np.ndarray:
        """How many videos are published by (the start of) each day: they are ids 0..count-1."""
        return np.searchsorted(self._publish_sorted, np.asarray(day), side="right")

    def retrieval_weight(self, day: int) -> np.ndarray:
        """Popularity as retrieval sees it on `day`: ramped up with age, boosted while fresh, 0 unpublished."""
        b = self.config.behaviour
        age = day - self.publish_day + 0.5  # at midday
        w = self.popularity * (1 - np.exp(-age / b.popularity_ramp_days)) * (1 + b.fresh_boost * np.exp(-age / b.fresh_days))
        return np.where(self.publish_day <= day, w, 0.0)

    @property
    def experiment_start(self) -> np.datetime64:
        assert self.config.pre_days is not None
        return self.epoch + np.timedelta64(self.config.pre_days * 86400 * 10**6, "us")

    # -- build ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, config: WorldConfig, *, workers: int = 1) -> World:
        """Draw a world from `config` (deterministic by config.seed; `workers` threads for the comment
        marginals change nothing in the result)."""
        b = config.behaviour
        ss = np.random.SeedSequence([config.seed, 0x5EED])
        r_users, r_videos, r_comments, _ = (np.random.default_rng(s) for s in ss.spawn(4))
        K, N, V = config.topics, config.users, config.videos
        a: dict[str, np.ndarray] = {}

        # users
        base = r_users.normal(0.0, b.interest_scale, size=(N, K))
        a["interest_base"] = base
        a["interest_drift"] = r_users.normal(0.0, b.drift_scale, size=(N, K))
        std = (base - base.mean(axis=1, keepdims=True)) / np.maximum(base.std(axis=1, keepdims=True), 1e-9)
        rho = b.discussion_corr
        a["discussion"] = rho * std + np.sqrt(1 - rho**2) * r_users.normal(size=(N, K))
        a["comment_propensity"] = r_users.beta(b.comment_propensity_a, b.comment_propensity_b, size=N)
        a["activity"] = np.exp(np.log(b.activity_median) + b.activity_sigma * r_users.normal(size=N))
        new = r_users.random(N) < b.new_user_share
        a["signup_day"] = np.where(new, r_users.integers(0, config.days, size=N),
                                   -r_users.integers(1, 731, size=N)).astype(np.int64)

        # videos
        primary = r_videos.integers(0, K, size=V)
        a["primary_topic"] = primary
        a["secondary_topic"] = (primary + r_videos.integers(1, K, size=V)) % K
        n_authors = max(1, int(round(V / b.videos_per_author)))
        author = r_videos.integers(0, n_authors, size=V)
        a["author"] = author
        s = b.author_quality_share
        quality = np.sqrt(s) * r_videos.normal(size=n_authors)[author] + np.sqrt(1 - s) * r_videos.normal(size=V)
        a["quality"] = quality
        dur = np.exp(np.log(b.duration_median_s) + b.duration_sigma * r_videos.normal(size=V))
        a["duration_s"] = np.round(np.clip(dur, b.duration_min_s, b.duration_max_s), 2)
        a["popularity"] = np.exp(b.popularity_quality * quality + r_videos.normal(size=V))
        # uploads: the last new_video_share of the ids are published during the logged days, in id order,
        # so the videos published by any day are a prefix of the ids; the rest up to a year before day 0
        n_new = int(round(b.new_video_share * V))
        a["publish_day"] = np.concatenate([-r_videos.integers(1, 366, size=V - n_new),
                                           np.sort(r_videos.integers(0, config.days, size=n_new))]).astype(np.int64)

        # comments (sorted by video)
        g = np.sqrt(a["popularity"])
        g = g / g.mean()
        sig = b.comment_count_sigma
        spread = np.exp(sig * r_comments.normal(size=V) - sig**2 / 2)  # mean 1: a heavy tail of busy sections
        counts = np.minimum(r_comments.poisson(config.comments_per_video * g * spread), MAX_COMMENTS_PER_VIDEO)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        a["comment_offsets"] = offsets
        C = int(offsets[-1])
        cvid = np.repeat(np.arange(V), counts)
        a["comment_video"] = cvid
        on_secondary = r_comments.random(C) < b.comment_secondary_share
        a["comment_topic"] = np.where(on_secondary, a["secondary_topic"][cvid], primary[cvid])
        qc = r_comments.normal(size=C)
        a["comment_quality_c"] = qc
        a["comment_stance"] = r_comments.choice(3, size=C, p=np.asarray(b.stance_probs))
        lam = np.exp(b.comment_like_base + b.comment_like_quality * qc
                     + b.comment_like_popularity * np.log(a["popularity"][cvid]))
        a["comment_likes"] = r_comments.poisson(lam).astype(np.int64)
        a["comment_score"] = (np.log1p(a["comment_likes"]) + 0.5 * qc
                              + b.comment_score_noise * r_comments.normal(size=C))
        qsum = np.bincount(cvid, weights=qc, minlength=V)
        qmean = np.divide(qsum, counts, out=np.zeros(V), where=counts > 0)
        a["comment_quality"] = np.where(counts > 0, (1 - np.exp(-counts / 4.0)) * _sigmoid(qmean + 0.5), 0.0)

        world = cls(config=config, arrays=a)
        decay = b.comment_exam_decay ** np.arange(b.comment_list_size)
        a["comment_exposure"] = np.stack(
            [np.einsum("cj,j->c", world.comment_marginals(variant, workers=workers), decay) for variant in (0, 1)],
            axis=1)  # (C, 2): exposure under the ranking of each variant
        world._make_text()
        return world

    def _make_text(self) -> None:
        """Titles and comment texts, in blocks of TEXT_BLOCK rows with one random stream per block
        (SeedSequence([seed, 0x7E47, kind, block])), as Arrow strings: memory bounded by a block."""
        b, cfg = self.config.behaviour, self.config
        vocab = _Vocab(self.topic_names)

        def blocks(kind: int, n: int) -> Iterator[tuple[slice, np.random.Generator]]:
            for i, s in enumerate(range(0, n, TEXT_BLOCK)):
                yield slice(s, min(s + TEXT_BLOCK, n)), np.random.default_rng(
                    np.random.SeedSequence([cfg.seed, 0x7E47, kind, i]))

        titles = [vocab.join(vocab.body_tokens(rng, self.primary_topic[sl], b.title_words_min,
                                               b.title_words_max, b.title_filler_share))
                  for sl, rng in blocks(0, self.n_videos)]
        texts = []
        for sl, rng in blocks(1, self.n_comments):
            stance = self.comment_stance[sl]
            body = vocab.body_tokens(rng, self.comment_topic[sl], b.comment_words_min,
                                     b.comment_words_max, b.comment_filler_share)
            first = vocab.stance_tokens(rng, stance)
            last = np.where(stance == 2, vocab.question, -1)  # questions end in "?"
            texts.append(vocab.join(np.column_stack([first, body, last])))
        self.titles = pa.chunked_array(titles, type=pa.string())
        self.comment_texts = pa.chunked_array(texts, type=pa.string())

    # -- comment ranking truth -----------------------------------------------------------------
    def comment_variant(self, users: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """Which personalised comment ranking a user sees under a video: 1 if the user discusses the
        video's secondary topic more than its primary one (phi_u), else 0."""
        ph = self.discussion
        return (ph[users, self.secondary_topic[videos]] > ph[users, self.primary_topic[videos]]).astype(np.int64)

    def comment_log_weights(self, variant: int = 0) -> np.ndarray:
        """Log PL weights of the logging comment ranking, aligned with comment ids, (C,): the comment
        score, plus comment_personal_boost for comments on the topic the variant favours (variant 0: the
        video's primary topic, 1: its secondary topic)."""
        b = self.config.behaviour
        favoured = self.primary_topic if variant == 0 else self.secondary_topic
        boost = b.comment_personal_boost * (self.comment_topic == favoured[self.comment_video])
        return self.comment_score / b.comment_temperature + boost

    def comment_marginals(self, variant: int = 0, *, workers: int = 1) -> np.ndarray:
        """P(comment c at rank j) under the logging comment ranking of `variant`, (C, comment_list_size).

        Exact, per group of videos with the same comment count m: the subset recursion for
        m <= SUBSET_MAX_COMMENTS (plackett_luce.subset_marginals, no quadrature; most sections), the
        exponential-race quadrature (plackett_luce.marginals) above.
        """
        cached = self._comment_marginals.get(variant) if self._comment_marginals else None
        if cached is not None:
            return cached
        L = self.config.behaviour.comment_list_size
        off = self.comment_offsets
        counts = np.diff(off)
        logw = self.comment_log_weights(variant)
        out = np.zeros((self.n_comments, L))
        for m in np.unique(counts[counts > 0]).tolist():
            vids = np.flatnonzero(counts == m)
            idx = off[vids][:, None] + np.arange(m)[None, :]  # (n_v, m) comment ids
            lw = logw[idx]
            w = np.exp(lw - lw.max(axis=1, keepdims=True))
            k = min(m, L)
            if m <= SUBSET_MAX_COMMENTS:
                out[idx, :k] = pl.subset_marginals(w, k)
            else:
                out[idx, :k] = pl.marginals(w, k, workers=workers)
        if self._comment_marginals is None:
            self._comment_marginals = {}
        self._comment_marginals[variant] = out
        return out

    def drop_caches(self) -> None:
        """Forget the comment marginal matrices (recomputed on the next `comment_marginals` call)."""
        self._comment_marginals = None

    # -- persistence ---------------------------------------------------------------------------
    def to_files(self) -> dict[str, bytes]:
        """The world as extra files of a log dataset: JSON config + arrays (.npz, no pickle)."""
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "seed": self.config.seed,
            "epoch": EPOCH,
            "pre_days": self.config.pre_days,
            "days": self.config.days,
            "experiment_start": str(self.experiment_start),
            "topics": list(self.topic_names),
            "ids": "user_id, video_id and comment_id equal the row index of the arrays",
        }
        return {CONFIG_FILE: json.dumps(meta, indent=2, sort_keys=True).encode(),
                ARRAYS_FILE: _npz_bytes(self.arrays)}

    @classmethod
    def from_files(cls, files: dict[str, bytes]) -> World:
        for name in (CONFIG_FILE, ARRAYS_FILE):
            if name not in files:
                raise FileNotFoundError(f"{name} missing: the dataset was not written by `harness simulate`")
        meta = json.loads(files[CONFIG_FILE])
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"world format version {meta.get('format_version')} != {FORMAT_VERSION}; "
                             "regenerate the dataset with this version of `harness simulate`")
        config = WorldConfig.from_dict(meta["config"])
        with np.load(io.BytesIO(files[ARRAYS_FILE]), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        missing = set(USER_ARRAYS + VIDEO_ARRAYS + COMMENT_ARRAYS) - set(arrays)
        if missing:
            raise ValueError(f"world arrays missing: {sorted(missing)}")
        return cls(config=config, arrays=arrays)

    @classmethod
    def load(cls, path: Path | str) -> World:
        """Rebuild the world from a dataset written by `harness simulate` (Parquet folder or DuckDB)."""
        from harness.logs.store import LogStore

        with LogStore.open(Path(path), validate=False) as store:
            names = set(store.extra_file_names)
            files = {n: store.extra_file(n) for n in (CONFIG_FILE, ARRAYS_FILE) if n in names}
        return cls.from_files(files)
