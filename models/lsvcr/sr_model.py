"""The LSVCR sequential recommender (the part kept in deployment), in one readable file.

Architecture (docs/lsvcr-method.md, "The SR model"): hidden d = 64, 2 layers, 2 heads, FFN 256, dropout 0.3, GELU,
post-LayerNorm, max position 50.

1. Text: LM embedding e (lm_dim) -> text MLP -> t (256) -> shared bias-free adapter A: 256 -> 64.
   history video  x_v = F([A t(title); A t(popular comment)]) + gate * id(video)
   comment record x_c = F([A t(title); mean_m A t(user comment m)]) + gate * id(video)
   with F = Linear(128 -> 64) shared by both histories.
2. Input = LayerNorm(x + position) -> dropout, separate position tables per history.
3. Two causal Transformer encoders (one per history).
4. Cross-history mix: video states attend to comment states and back (one attention layer each way),
   then Linear(128 -> 64)([own; mixed]).
5. Heads: video = additive-attention pooling over video-history states; comment = one attention layer
   whose query is the watched video (gate * id + A t(title)) over comment-history states.
6. Score = cos(user, item) / 0.07; video item = gate * id + A t(title), comment item = A t(comment).
   Comment logits add a learned like-count prior 20 (w[bucket(likes_c)] + a log(1 + likes_c)), bucket = floor(log2(1 + likes))
   capped at LIKE_BUCKETS - 1 (`SRConfig.comment_prior`; our addition, not in the paper: comment
   exposure follows like count, and a text-only comment vector cannot know it). Zero-initialised, so
   it starts as the paper's score and only moves where the data pays for it.

Time (all prefixes of a user in one pass, exact): histories are sorted by time, padding at the end
(time = +inf). An event's encoder state comes from a causal window of W = max_len events with
positions 0..W-1; windows start every W/2 events and event p is read from the window in which it lies
in the second half (p < W: the first window), so every state sees 25-50 events of context and depends
only on earlier events. The cross mix lets event i see the last W records of the other history with
time <= t_i (same-request events are known once that request has happened; nothing at or after a query
time can reach the query, because the query only reads events with t < query time). A head for a query
at time q reads the last W events with t < q. Hence scoring all queries from one pass equals scoring
each query on the history truncated to t < q (tested). Empty visible sets fall back to a learned null
key/value (attention) or null state (pooling) instead of a softmax over nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.lsvcr.config import SRConfig

LIKE_BUCKETS = 16  # like counts 0, 1, 2-3, 4-7, ..., >= 2^15 - 1
# The prior is PRIOR_SCALE * w: AdamW moves a parameter by about lr per step whatever its gradient,
# so an unscaled prior would need thousands of steps (at lr 1e-3) to reach the few logits that the
# like-count order is worth; scaled, it gets there within an epoch.
PRIOR_SCALE = 20.0


def unit(x: Tensor, eps: float = 1e-8) -> Tensor:
    """x / |x| along the last axis, and exactly 0 with zero gradient where |x| < eps.

    F.normalize divides by max(|x|, 1e-12), so a zero vector (a video with neither text nor a trained
    ID row, e.g. every unseen video of the text-less ablation) gets a gradient of order 1e12 from a
    softmax over all videos; gradient clipping then scales every other gradient to nothing, and
    training stalls at a loss above log(#videos) (the `no_text` collapse)."""
    n = x.norm(dim=-1, keepdim=True)
    return torch.where(n >= eps, x / n.clamp_min(eps), torch.zeros_like(x))


def visible(key_time: Tensor, query_time: Tensor, window: int, *, strict: bool) -> Tensor:
    """(B, Lq, Lk) mask: key j visible to query i if t_j < t_i (strict) or t_j <= t_i, keeping only the
    last `window` such keys. Keys are sorted by time (pads +inf at the end), so the visible set is the
    index range [k - window, k) with k = number of keys before the query time."""
    kt, qt = key_time[:, None, :], query_time[:, :, None]
    before = kt < qt if strict else kt <= qt  # (B, Lq, Lk)
    k = before.sum(-1, keepdim=True)  # (B, Lq, 1)
    idx = torch.arange(key_time.shape[1], device=key_time.device)
    return before & (idx >= k - window)


class MaskedAttention(nn.Module):
    """Multi-head attention under a (B, Lq, Lk) visibility mask, plus a learned null key/value that
    every query sees (so an empty history gives a learned default rather than NaN)."""

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.h, self.dh, self.dropout = n_heads, d // n_heads, dropout
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.null_k = nn.Parameter(torch.randn(d) * 0.02)
        self.null_v = nn.Parameter(torch.randn(d) * 0.02)

    def forward(self, query: Tensor, keys: Tensor, vis: Tensor) -> Tensor:
        B, Lq, d = query.shape
        null_k = self.null_k.expand(B, 1, d)
        null_v = self.null_v.expand(B, 1, d)
        k = torch.cat([null_k, self.k(keys)], 1)  # (B, 1 + Lk, d)
        v = torch.cat([null_v, self.v(keys)], 1)

        def heads(x: Tensor) -> Tensor:
            return x.view(B, x.shape[1], self.h, self.dh).transpose(1, 2)  # (B, h, L, dh)

        mask = torch.cat([vis.new_ones(B, Lq, 1), vis], -1)[:, None]  # (B, 1, Lq, 1 + Lk)
        out = F.scaled_dot_product_attention(heads(self.q(query)), heads(k), heads(v), attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.o(out.transpose(1, 2).reshape(B, Lq, d))  # (B, Lq, d)


class AdditivePooling(nn.Module):
    """Additive attention pooling: a_i = softmax_i(w^T tanh(W h_i + b)) over visible i (+ a learned
    null state), user = sum_i a_i h_i."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, d)
        self.w = nn.Linear(d, 1, bias=False)
        self.null = nn.Parameter(torch.randn(d) * 0.02)

    def forward(self, states: Tensor, vis: Tensor) -> Tensor:
        B, Q, L = vis.shape
        e = self.w(torch.tanh(self.proj(states))).squeeze(-1)  # (B, L)
        e_null = self.w(torch.tanh(self.proj(self.null)))  # (1,)
        logits = e[:, None, :].expand(B, Q, L).masked_fill(~vis, float("-inf"))
        a = torch.softmax(torch.cat([e_null.expand(B, Q, 1), logits], -1), -1)  # (B, Q, 1 + L)
        return a[..., :1] * self.null + a[..., 1:] @ states  # (B, Q, d)


def _text_modules(lm_dim: int, text_dim: int, hidden: int) -> tuple[nn.Module, nn.Module]:
    """The text MLP t (lm_dim -> text_dim -> text_dim) and the bias-free adapter A (text_dim -> hidden)."""
    return (nn.Sequential(nn.Linear(lm_dim, text_dim), nn.GELU(), nn.Linear(text_dim, text_dim)),
            nn.Linear(text_dim, hidden, bias=False))


class TextProjection(nn.Module):
    """e -> A t(e) on its own, with the SR model's parameter names (`text_mlp.*`, `adapter.*`): what a
    serving export keeps to project the embeddings of texts it was not exported with."""

    def __init__(self, lm_dim: int, text_dim: int, hidden: int) -> None:
        super().__init__()
        self.text_mlp, self.adapter = _text_modules(lm_dim, text_dim, hidden)

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> TextProjection:
        """Rebuilt from its state dict (sizes read from the weights)."""
        try:
            text_dim, lm_dim = state["text_mlp.0.weight"].shape
            hidden = state["adapter.weight"].shape[0]
        except (KeyError, ValueError) as e:
            raise ValueError(f"a text projection needs text_mlp.0.weight and adapter.weight ({e})") from e
        proj = cls(int(lm_dim), int(text_dim), int(hidden))
        proj.load_state_dict(state)  # strict: names and shapes must match
        return proj.eval()

    def forward(self, e: Tensor) -> Tensor:  # (N, lm_dim) -> (N, hidden)
        return self.adapter(self.text_mlp(e))


@dataclass
class States:
    """Mixed per-event states of both histories, with their times."""

    video: Tensor  # (B, L, d)
    video_time: Tensor  # (B, L) float64, +inf at pads
    comment: Tensor  # (B, Lc, d)
    comment_time: Tensor  # (B, Lc)


class LSVCRSR(nn.Module):
    """The SR model. Text tables are non-persistent buffers set with `set_text` (they are stored in
    text_embeddings.safetensors, not in the model weights)."""

    def __init__(self, cfg: SRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.text_mlp: nn.Module
        self.adapter: nn.Module
        if cfg.text_projected:  # a serving export: the tables hold A t(e) already
            self.text_mlp, self.adapter = nn.Identity(), nn.Identity()
        else:
            self.text_mlp, self.adapter = _text_modules(cfg.lm_dim, cfg.text_dim, d)
        self.fuse = nn.Linear(2 * d, d)
        self.video_id = nn.Embedding(cfg.n_videos + 1, d, padding_idx=0) if cfg.use_ids else None
        self.gate = nn.Parameter(torch.tensor(1.0)) if cfg.use_ids else None
        # Without text, comments need their own ID table (LSVCR proper has no comment IDs).
        self.comment_id = None if cfg.use_text else nn.Embedding(cfg.n_comments + 1, d, padding_idx=0)
        self.pos_video = nn.Embedding(cfg.max_len, d)
        self.pos_comment = nn.Embedding(cfg.max_len, d)
        self.ln_video, self.ln_comment = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)

        def encoder() -> nn.TransformerEncoder:
            layer = nn.TransformerEncoderLayer(d, cfg.n_heads, cfg.ffn, cfg.dropout, activation="gelu",
                                               batch_first=True, norm_first=False)
            return nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)

        self.enc_video, self.enc_comment = encoder(), encoder()
        self.cross_v2c = MaskedAttention(d, cfg.n_heads, cfg.dropout)
        self.cross_c2v = MaskedAttention(d, cfg.n_heads, cfg.dropout)
        self.mix_video, self.mix_comment = nn.Linear(2 * d, d), nn.Linear(2 * d, d)
        self.video_head = AdditivePooling(d)
        self.comment_head = MaskedAttention(d, cfg.n_heads, cfg.dropout)
        self.like_prior = nn.Embedding(LIKE_BUCKETS, 1) if cfg.comment_prior else None
        # a slope on log(1 + likes), so the prior can also order comments within a bucket
        self.like_slope = nn.Parameter(torch.zeros(())) if cfg.comment_prior else None
        for name, dim in (("title_emb", cfg.lm_dim), ("comment_emb", cfg.lm_dim)):
            self.register_buffer(name, torch.zeros(1, dim), persistent=False)
        for name in ("title_has", "comment_has"):
            self.register_buffer(name, torch.zeros(1, dtype=torch.bool), persistent=False)
        self.register_buffer("popular_comment", torch.zeros(1, dtype=torch.long), persistent=False)
        self.register_buffer("like_bucket", torch.zeros(1, dtype=torch.long), persistent=False)
        self.register_buffer("like_log", torch.zeros(1), persistent=False)
        self._title_cache: Tensor | None = None  # set only inside `text_cache`
        self._comment_cache: Tensor | None = None
        self._title_rows: tuple[Tensor, Tensor] | None = None  # set only inside `text_rows`
        self._comment_rows: tuple[Tensor, Tensor] | None = None
        self.apply(self._init)
        if self.like_prior is not None:
            nn.init.zeros_(self.like_prior.weight)
        self.reset_pad_rows()

    @staticmethod
    def _init(m: nn.Module) -> None:
        """RecBole's initialisation (the paper's code base, and our SASRec): Linear and Embedding
        weights ~ N(0, 0.02), zero biases. PyTorch's default N(0, 1) embeddings have norm ~8 in 64-d,
        25x the text vectors A t(e) (norm ~0.3 on MiniLM inputs): the ID term would swamp the
        stage-1-aligned text in every item and history vector, and AdamW at lr 1e-3 moves such an
        ID row only slowly, so stage 2 would start from (and long keep) random item vectors; the
        position tables would likewise swamp the inputs of the encoders."""
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    # ----- text tables ---------------------------------------------------------------------------
    def set_text(self, title_emb: Tensor, title_has: Tensor, comment_emb: Tensor, comment_has: Tensor,
                 popular_comment: Tensor, comment_likes: Tensor | None = None) -> None:
        """Install LM embeddings (V+1, D) / (C+1, D), their has-text masks, popular comments (V+1,) and
        the comments' like counts (C+1,) for the like-count prior (None = all zero)."""
        D = self.cfg.lm_dim
        if title_emb.ndim != 2 or title_emb.shape[1] != D or comment_emb.ndim != 2 or comment_emb.shape[1] != D:
            raise ValueError(f"text embeddings must be (V+1, {D}) and (C+1, {D}); got "
                             f"{tuple(title_emb.shape)} and {tuple(comment_emb.shape)}")
        if popular_comment.shape[0] != title_emb.shape[0]:
            raise ValueError("popular_comment must have one entry per title row (V+1)")
        dev = self.pos_video.weight.device
        self.title_emb = title_emb.float().to(dev)
        self.title_has = title_has.bool().to(dev)
        self.comment_emb = comment_emb.float().to(dev)
        self.comment_has = comment_has.bool().to(dev)
        self.popular_comment = popular_comment.long().to(dev)
        self.set_comment_likes(comment_likes)

    def set_comment_likes(self, comment_likes: Tensor | None) -> None:
        """The like counts (C+1,) the like-count prior reads from now on (None = all zero). Evaluation installs
        the counts as of each query's time here (models.adapters.comment_likes_setter)."""
        rows = self.comment_emb.shape[0]
        if comment_likes is None:
            comment_likes = torch.zeros(rows, dtype=torch.long)
        if comment_likes.shape[0] != rows:
            raise ValueError(f"comment_likes must have one entry per comment row ({rows}), got {comment_likes.shape[0]}")
        likes = comment_likes.double().clamp(min=0)
        dev = self.pos_video.weight.device
        self.like_bucket = torch.floor(torch.log2(1.0 + likes)).long().clamp(max=LIKE_BUCKETS - 1).to(dev)
        self.like_log = torch.log1p(likes).float().to(dev)

    def reset_pad_rows(self) -> None:
        """Padding rows of the ID tables are zero (a pitfall of the public code)."""
        with torch.no_grad():
            for emb in (self.video_id, self.comment_id):
                if emb is not None:
                    emb.weight[0].zero_()

    # ----- item vectors --------------------------------------------------------------------------
    def _text(self, table: Tensor, has: Tensor, idx: Tensor, rows: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """A t(e) for rows idx (any shape), zero where there is no text or idx is padding. The MLP runs
        once per distinct row (histories repeat videos a lot), then is gathered back. `rows` = (sorted
        distinct row ids (R,), their embeddings (R, D)) replace those rows of `table` (`text_rows`)."""
        uniq, inv = torch.unique(idx, return_inverse=True)
        e = table[uniq]  # (U, D)
        if rows is not None and rows[0].numel():
            at = torch.searchsorted(rows[0], uniq).clamp(max=rows[0].numel() - 1)
            e = torch.where((rows[0][at] == uniq).unsqueeze(-1), rows[1][at].to(e.dtype), e)
        out = self.adapter(self.text_mlp(e))
        return (out * has[uniq].unsqueeze(-1).to(out.dtype))[inv]

    def _dense_text(self, table: Tensor, has: Tensor, rows: Tensor | None) -> Tensor:
        """(N+1, d) table of A t(e) holding `rows` (None = every row), zero elsewhere; differentiable."""
        if rows is None:
            out = self.adapter(self.text_mlp(table))
            return out * has.unsqueeze(-1).to(out.dtype)
        rows = torch.unique(rows)
        vec = self.adapter(self.text_mlp(table[rows])) * has[rows].unsqueeze(-1).to(table.dtype)
        return vec.new_zeros(table.shape[0], vec.shape[1]).index_put((rows,), vec)

    @contextmanager
    def text_cache(self, comments: Tensor | None = None) -> Iterator[None]:
        """Within the block, text vectors come from tables computed once: every title (the full-softmax
        video task needs all of them anyway) and the comment rows `comments` (None = all). A training
        step otherwise runs the text MLP separately for the history's popular comments, the users'
        comments, the candidates and the titles of each use; the cached tables are the same function
        of the same weights, so losses and gradients are unchanged. Lookups of comment rows outside
        `comments` give zero vectors, so pass every row the block will read."""
        if not self.cfg.use_text:
            yield
            return
        self._title_cache = self._dense_text(self.title_emb, self.title_has, None)
        self._comment_cache = (None if self.comment_id is not None
                               else self._dense_text(self.comment_emb, self.comment_has, comments))
        try:
            yield
        finally:
            self._title_cache = self._comment_cache = None

    @contextmanager
    def text_rows(self, titles: tuple[Tensor, Tensor] | None = None,
                  comments: tuple[Tensor, Tensor] | None = None) -> Iterator[None]:
        """Within the block, the LM embeddings of some rows come from the caller instead of the tables:
        `titles` = (sorted distinct video rows (R,), embeddings (R, lm_dim)), likewise `comments`. Stage 1
        passes the in-graph embeddings of a batch's items (models/lsvcr/batch_text.py), so its losses
        reach the language model through them; the other rows read the tables. Not combinable with
        `text_cache`, whose tables are computed from the installed embeddings."""
        if self._title_cache is not None:
            raise RuntimeError("text_rows inside text_cache: the cached tables would ignore the given rows")
        self._title_rows, self._comment_rows = titles, comments
        try:
            yield
        finally:
            self._title_rows = self._comment_rows = None

    def title_vec(self, v: Tensor) -> Tensor:
        if not self.cfg.use_text:
            return self.pos_video.weight.new_zeros(*v.shape, self.cfg.hidden)
        if self._title_cache is not None:
            return self._title_cache[v]
        return self._text(self.title_emb, self.title_has, v, self._title_rows)

    def comment_vec(self, c: Tensor) -> Tensor:
        if self.comment_id is not None:
            return self.comment_id(c)
        if self._comment_cache is not None:
            return self._comment_cache[c]
        return self._text(self.comment_emb, self.comment_has, c, self._comment_rows)

    def id_vec(self, v: Tensor) -> Tensor:
        if self.video_id is None:
            return self.pos_video.weight.new_zeros(*v.shape, self.cfg.hidden)
        return self.gate * self.video_id(v)

    def video_item(self, v: Tensor) -> Tensor:
        """Video item vector gate * id + A t(title), (..., d). Index 0 (unknown/pad) gives text only."""
        return self.id_vec(v) + self.title_vec(v)

    def comment_item(self, c: Tensor) -> Tensor:
        return self.comment_vec(c)

    def comment_bias(self, c: Tensor) -> Tensor:
        """The like-count prior of comments c (any shape), 0 without `comment_prior`."""
        if self.like_prior is None:
            return self.pos_video.weight.new_zeros(c.shape)
        return PRIOR_SCALE * (self.like_prior.weight[self.like_bucket[c], 0] + self.like_slope * self.like_log[c])

    def comment_logits(self, user: Tensor, c: Tensor) -> Tensor:
        """Comment scores: cos(user, A t(c)) / tau + prior(c). user (..., d), c (..., C) -> (..., C)."""
        return self.score(user, self.comment_item(c)) + self.comment_bias(c)

    # ----- history features ----------------------------------------------------------------------
    def video_features(self, v: Tensor, shown_comment: Tensor | None = None) -> Tensor:
        """(B, L) videos (+ the comment shown with each, default its popular comment) -> (B, L, d)."""
        c = self.popular_comment[v] if shown_comment is None else shown_comment
        return self.fuse(torch.cat([self.title_vec(v), self.comment_vec(c)], -1)) + self.id_vec(v)

    def comment_features(self, v: Tensor, comments: Tensor) -> Tensor:
        """(B, Lc) videos and (B, Lc, M) the user's comments under them -> (B, Lc, d)."""
        cv = self.comment_vec(comments)  # (B, Lc, M, d)
        n = (comments > 0).sum(-1, keepdim=True).clamp(min=1).to(cv.dtype)
        mean = cv.sum(-2) / n  # (B, Lc, d)
        return self.fuse(torch.cat([self.title_vec(v), mean], -1)) + self.id_vec(v)

    # ----- encoders ------------------------------------------------------------------------------
    def _encode(self, x: Tensor, pos: nn.Embedding, ln: nn.LayerNorm, enc: nn.TransformerEncoder,
                positions: Tensor | None) -> Tensor:
        B, L, d = x.shape
        W, S = self.cfg.max_len, self.cfg.max_len // 2
        if L == 0:
            return x
        if positions is not None or L <= W:
            if positions is None:
                positions = torch.arange(L, device=x.device).expand(B, L)
            if L > W:
                raise ValueError(f"explicit positions need histories of at most {W} events, got {L}")
            h = self.drop(ln(x + pos(positions)))  # (B, L, d)
            return enc(h, mask=nn.Transformer.generate_square_subsequent_mask(L, device=x.device), is_causal=True)
        p = torch.arange(L, device=x.device)
        start = torch.where(p < W, torch.zeros_like(p), S * (p // S - 1))  # window start of each event
        n_w = int(start[-1]) // S + 1
        xp = F.pad(x, (0, 0, 0, int(start[-1]) + W - L))  # (B, Lp, d), zero pads at the end
        win = xp.unfold(1, W, S).permute(0, 1, 3, 2)  # (B, n_w, W, d)
        h = self.drop(ln(win + pos.weight))  # positions 0..W-1 in every window
        out = enc(h.reshape(B * n_w, W, d), mask=nn.Transformer.generate_square_subsequent_mask(W, device=x.device),
                  is_causal=True).view(B, n_w, W, d)
        return out[:, start // S, p - start]  # (B, L, d)

    def encode(self, video_ids: Tensor, video_time: Tensor, comment_video_ids: Tensor, comment_ids: Tensor,
               comment_time: Tensor, *, shown_comment: Tensor | None = None, video_pos: Tensor | None = None,
               comment_pos: Tensor | None = None) -> States:
        """Both histories -> mixed per-event states. Shapes: video (B, L), comment (B, Lc) and (B, Lc, M).

        A model without comment histories (`use_comments=False`, the no_comments ablation) never reads
        them, here or anywhere: they are replaced by an empty history, so its scores cannot depend on them.
        """
        W = self.cfg.max_len
        if not self.cfg.use_comments:
            B, M = comment_ids.shape[0], comment_ids.shape[-1]
            comment_video_ids = comment_video_ids.new_zeros(B, 1)
            comment_ids = comment_ids.new_zeros(B, 1, M)
            comment_time = torch.full((B, 1), float("inf"), dtype=comment_time.dtype, device=comment_time.device)
            comment_pos = None
        hv = self._encode(self.video_features(video_ids, shown_comment), self.pos_video, self.ln_video,
                          self.enc_video, video_pos)  # (B, L, d)
        hc = self._encode(self.comment_features(comment_video_ids, comment_ids), self.pos_comment,
                          self.ln_comment, self.enc_comment, comment_pos)  # (B, Lc, d)
        mv = self.cross_v2c(hv, hc, visible(comment_time, video_time, W, strict=False))  # (B, L, d)
        mc = self.cross_c2v(hc, hv, visible(video_time, comment_time, W, strict=False))  # (B, Lc, d)
        return States(self.mix_video(torch.cat([hv, mv], -1)), video_time,
                      self.mix_comment(torch.cat([hc, mc], -1)), comment_time)

    # ----- heads ---------------------------------------------------------------------------------
    def pool(self, states: Tensor, times: Tensor, query_time: Tensor) -> Tensor:
        """Video head: additive pooling over the last W states with t < query time -> (B, Q, d)."""
        return self.video_head(states, visible(times, query_time, self.cfg.max_len, strict=True))

    def attend(self, states: Tensor, times: Tensor, query_time: Tensor, query_video: Tensor) -> Tensor:
        """Comment head: the watched video's item vector attends over the last W states with t < query
        time; the query is kept as a residual, so an empty history ranks by the video alone -> (B, Q, d)."""
        q = self.video_item(query_video)  # (B, Q, d)
        return q + self.comment_head(q, states, visible(times, query_time, self.cfg.max_len, strict=True))

    def user_video(self, st: States, query_time: Tensor) -> Tensor:
        return self.pool(st.video, st.video_time, query_time)

    def user_comment(self, st: States, query_time: Tensor, query_video: Tensor) -> Tensor:
        if not self.cfg.use_comments:  # no comment history: the comment head reads the video history
            return self.attend(st.video, st.video_time, query_time, query_video)
        return self.attend(st.comment, st.comment_time, query_time, query_video)

    # ----- scoring -------------------------------------------------------------------------------
    def score(self, user: Tensor, items: Tensor) -> Tensor:
        """cos(user, item) / temperature. user (..., d), items (..., C, d) -> (..., C)."""
        u = unit(user).unsqueeze(-2)
        return (u * unit(items)).sum(-1) / self.cfg.temperature

    def score_all_videos(self, user: Tensor) -> Tensor:
        """(N, d) users -> (N, V+1) scores against every video (column 0 = padding, set to -inf)."""
        table = unit(self.video_item(torch.arange(self.cfg.n_videos + 1, device=user.device)))
        s = unit(user) @ table.T / self.cfg.temperature
        s[:, 0] = float("-inf")
        return s
