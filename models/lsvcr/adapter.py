"""`lsvcr` as a `Recommender` (models/adapters.py): one causal pass per user, checkpoint I/O.

`score_videos` / `score_comments` encode each user's two histories once (`LSVCRSR.encode`) and read
every query from the per-event states with time masks, so the scores equal scoring each query on its
own history truncated to events before the query time (`*_naive`, the reference used in tests).
Candidate item vectors are computed once per distinct candidate in the batch (the text MLP is the
expensive part), and scores are assembled in query chunks so memory stays bounded for long replays.

Checkpoint folder (written by `models.checkpoint.save_checkpoint`, never pickle):
`config.json` (kind "lsvcr", hyperparameters = the full `LSVCRConfig`, stage timings and validation
metrics, catalogue digest, data fingerprint, seed, code version, `tuned_lm`), `model.safetensors` (the SR
model: text MLP, adapter, ID table, gate, encoders, heads), `text_embeddings.safetensors` (the tuned LM's
embeddings of every title and comment, float16), `catalogue.safetensors`, `tuned_lm.safetensors` (the LM
weights stage 1 tuned, models/lsvcr/tuned_lm.py; absent in checkpoints written before it was saved) and,
in a serving export, `text_projection.safetensors` (the text MLP and adapter, to project new texts).

Cold videos: a video that never occurs in the training histories keeps a zero ID row (stage 2 holds it
at zero), so its item vector is the text-only A t(title); a video without a title and without an ID
scores 0 (cosine with a zero vector).

New videos and comments (not in the training catalogue at all, e.g. published after the training cut):
given the data's catalogue, `from_checkpoint` maps the model onto it and the tuned LM embeds their texts
when a scoring call first reads them (models/lsvcr/serving.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from models.batch import CommentQuery, UserHistories, VideoQuery, score_live, visible_count
from models.catalogue import Catalogue
from models.checkpoint import CheckpointError, check_state_shapes, load_checkpoint, save_checkpoint
from models.lsvcr.config import LSVCRConfig
from models.lsvcr.serving import CatalogueMap, NewItems, unavailable_reason
from models.lsvcr.sr_model import LSVCRSR, States, TextProjection, unit
from models.lsvcr.text import TEXT_FILE, TextTables
from models.lsvcr.tuned_lm import DEFAULT_TEXT_CACHE, TUNED_LM_FILE, TextEncoder, TunedLM

PROJECTION_FILE = "text_projection.safetensors"  # a serving export's text MLP and adapter

KIND = "lsvcr"


class LSVCRRecommender:
    """The deployed LSVCR SR model behind the `Recommender` interface."""

    kind = KIND

    def __init__(self, model: LSVCRSR, catalogue: Catalogue, tables: TextTables, *, name: str = "lsvcr",
                 digest: str = "", device: str = "cpu", config: LSVCRConfig | None = None,
                 tuned_lm: TunedLM | None = None, text_projection: TextProjection | None = None) -> None:
        cfg = model.cfg
        if cfg.n_videos != catalogue.n_videos:
            raise ValueError(f"the model has {cfg.n_videos} videos but the catalogue {catalogue.n_videos}")
        tables.check_catalogue(catalogue, "LSVCR text tables")
        if tables.dim != cfg.lm_dim:
            raise ValueError(f"text embeddings are {tables.dim}-d but the model's text MLP expects {cfg.lm_dim}-d")
        self.model = model.to(device).eval()
        self.model.set_text(tables.title_emb, tables.title_has, tables.comment_emb, tables.comment_has,
                            torch.from_numpy(catalogue.popular_comment), torch.from_numpy(catalogue.comment_likes))
        self.catalogue, self.tables, self.name, self.digest, self.device = catalogue, tables, name, digest, device
        self.config = config
        self.tuned_lm = tuned_lm  # saved with the checkpoint: embeds texts the model has not seen
        self.text_projection = text_projection  # a serving export's e -> A t(e) (its model has identities)
        self.new_items: NewItems | None = None  # set by from_checkpoint when the data adds items
        self.chunk_cells = 1 << 22  # users x L x Lc per encoding chunk
        self.trim = True  # drop history events no query of the batch can depend on (`_trim`)

    # ----- scoring -------------------------------------------------------------------------------
    def _trim(self, hist: UserHistories, query_time: Tensor, head: str) -> UserHistories:
        """Each user's histories cut to the events that can reach one of its queries; scores unchanged.

        Why: offline evaluation asks one query per user at the end of a history of up to thousands of
        events, and encoding all of them (with (L x Lc) time masks) made a validation pass cost about
        as much as a training epoch.

        Which states a query at time q reads (sr_model.py; W = max_len, S = W/2; kv, kc = video events
        and comment records before q): the video head reads mixed video states kv-W..kv-1, whose
        cross-attention reads comment *encoder* states from index cnt_c(t <= t_v[kv-W]) - W on; the
        comment head reads mixed comment states kc-W..kc-1, whose cross-attention reads video encoder
        states from cnt_v(t <= t_c[kc-W]) - W on. Per history, let a be the smallest state index read
        by `head` ("video" or "comment") for the user's earliest query (later queries read later
        states). An encoder state depends on its window, which starts at a multiple of S; cutting the
        history at a multiple of S that is
        <= a - S leaves every state at index >= a in the same window with the same content and
        positions, so those states, and the scores, are unchanged (only states in the first S kept
        events see shorter windows, and none is read). Events at or after the last query time are
        dropped too (nothing reads them). Tested against the untrimmed pass."""
        W = self.model.cfg.max_len
        S = W // 2
        inf = float("inf")
        real = ~torch.isneginf(query_time) & ~torch.isnan(query_time)  # -inf = a padded query; +inf = "after all"
        q_lo = torch.where(real, query_time, torch.full_like(query_time, inf)).amin(1, keepdim=True)
        q_hi = torch.where(real, query_time, torch.full_like(query_time, -inf)).amax(1, keepdim=True)
        vt, ct = hist.video_time, hist.comment_time
        kv = visible_count(vt, q_lo)[:, 0]  # (B,)
        kc = visible_count(ct, q_lo)[:, 0]
        B = vt.shape[0]
        rows = torch.arange(B, device=vt.device)

        def time_at(times: Tensor, k: Tensor) -> Tensor:
            """time of event max(k - W, 0), the first one a query with k visible events reads (also
            when k = 0: a later query of the same user may read event 0); +inf for an empty history."""
            return times[rows, (k - W).clamp(min=0, max=times.shape[1] - 1)]

        def count_le(times: Tensor, t: Tensor) -> Tensor:
            return torch.searchsorted(times.contiguous(), t[:, None].contiguous(), side="right")[:, 0]

        if head == "comment" and not self.model.cfg.use_comments:
            head = "video"  # without comment histories the comment head reads the video states (sr_model)
        if head == "video":
            a_v = kv - W
            a_c = count_le(ct, time_at(vt, kv)) - W
        elif head == "comment":
            a_c = kc - W
            a_v = count_le(vt, time_at(ct, kc)) - W
        else:
            raise ValueError(f"head must be 'video' or 'comment', got {head!r}")

        def window(a: Tensor, times: Tensor) -> tuple[Tensor, Tensor]:
            start = torch.div((a - S).clamp(min=0), S, rounding_mode="floor") * S
            end = visible_count(times, q_hi)[:, 0]
            start = torch.minimum(start, end)
            return start, end

        vs, ve = window(a_v, vt)
        cs, ce = window(a_c, ct)
        Lv, Lc = max(1, int((ve - vs).max())), max(1, int((ce - cs).max()))
        if Lv >= vt.shape[1] and Lc >= ct.shape[1]:
            return hist  # nothing to cut

        def take(x: Tensor, start: Tensor, end: Tensor, n: int, fill) -> Tensor:
            """Events [start, end) of each row, left-aligned in n columns, `fill` after them."""
            pos = torch.arange(n, device=x.device)[None]  # (1, n)
            idx = (start[:, None] + pos).clamp(max=x.shape[1] - 1)  # (B, n)
            extra = [1] * (x.ndim - 2)
            g = x.gather(1, idx.view(*idx.shape, *extra).expand(-1, -1, *x.shape[2:]))
            keep = (pos < (end - start)[:, None]).view(-1, n, *extra)
            return torch.where(keep, g, torch.as_tensor(fill, dtype=x.dtype, device=x.device))

        return UserHistories(take(hist.video_ids, vs, ve, Lv, 0), take(vt, vs, ve, Lv, inf),
                             take(hist.comment_video_ids, cs, ce, Lc, 0), take(hist.comment_ids, cs, ce, Lc, 0),
                             take(ct, cs, ce, Lc, inf))

    def _states(self, hist: UserHistories) -> States:
        return self.model.encode(hist.video_ids, hist.video_time, hist.comment_video_ids, hist.comment_ids,
                                 hist.comment_time)

    def _score(self, user: Tensor, cands: Tensor, item_fn: Callable[[Tensor], Tensor],
               bias_fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """cos(user, item) / tau (+ bias_fn(item)) for (B, Q, d) users and (B, Q, C) candidates, -inf at pads."""

        def rows(user: Tensor, c: Tensor) -> Tensor:  # (N, d), (N, C) -> (N, C)
            uniq, inv = torch.unique(c, return_inverse=True)
            table, un = unit(item_fn(uniq)), unit(user)  # (U, d), (N, d)
            N, C = c.shape
            s = torch.empty(N, C, device=c.device)
            step = max(1, (1 << 22) // max(1, C * table.shape[1]))  # bounds the (step, C, d) gather
            for n0 in range(0, N, step):
                vec = table[inv[n0:n0 + step]]  # (n, C, d)
                s[n0:n0 + step] = torch.bmm(vec, un[n0:n0 + step, :, None])[..., 0] / self.model.cfg.temperature
            return s if bias_fn is None else s + bias_fn(uniq)[inv]

        return score_live(cands, user, rows)

    def _users(self, hist: UserHistories, fn: Callable[[States, slice], Tensor]) -> Tensor:
        """User vectors (B, Q, d), encoding users in chunks trimmed to their own lengths, so that the
        (users x L x Lc) cross-history masks of heavy users stay within a fixed memory budget."""
        nv = (hist.video_ids > 0).sum(1)
        nc = (hist.comment_video_ids > 0).sum(1)
        out, b = [], 0
        B = hist.batch_size
        while b < B:
            e = b + 1
            while e < B and (e + 1 - b) * max(1, int(nv[b:e + 1].max())) * max(1, int(nc[b:e + 1].max())) <= self.chunk_cells:
                e += 1
            L, Lc = max(1, int(nv[b:e].max())), max(1, int(nc[b:e].max()))
            h = UserHistories(hist.video_ids[b:e, :L], hist.video_time[b:e, :L], hist.comment_video_ids[b:e, :Lc],
                              hist.comment_ids[b:e, :Lc], hist.comment_time[b:e, :Lc])
            out.append(fn(self._states(h), slice(b, e)))
            b = e
        return torch.cat(out, 0)

    def _fill_new(self, hist: UserHistories, videos: list[Tensor], comments: list[Tensor]) -> None:
        """Embed the new items (outside the training catalogue) that this call reads: the query's videos and
        comments, the histories' videos with the comment each is shown with, and the users' comments."""
        if self.new_items is None:
            return
        shown = self.model.popular_comment[hist.video_ids]
        vids, coms = [hist.video_ids, *videos], [shown, *comments]
        if self.model.cfg.use_comments:  # the no_comments ablation never reads comment histories
            vids.append(hist.comment_video_ids)
            coms.append(hist.comment_ids)
        self.new_items.fill(self.model, torch.cat([v.reshape(-1) for v in vids]),
                            torch.cat([c.reshape(-1) for c in coms]))

    @torch.no_grad()
    def score_videos(self, hist: UserHistories, query: VideoQuery) -> Tensor:
        hist, query = hist.to(self.device), query.to(self.device)
        self._fill_new(hist, [query.candidates], [])
        if self.trim:
            hist = self._trim(hist, query.time, "video")
        user = self._users(hist, lambda st, sl: self.model.user_video(st, query.time[sl]))  # (B, Q, d)
        return self._score(user, query.candidates, self.model.video_item)

    @torch.no_grad()
    def score_comments(self, hist: UserHistories, query: CommentQuery) -> Tensor:
        hist, query = hist.to(self.device), query.to(self.device)
        self._fill_new(hist, [query.video_ids], [query.candidates])
        if self.trim:
            hist = self._trim(hist, query.time, "comment")
        user = self._users(hist, lambda st, sl: self.model.user_comment(st, query.time[sl], query.video_ids[sl]))
        return self._score(user, query.candidates, self.model.comment_item, self.model.comment_bias)

    def _truncated(self, hist: UserHistories, b: int, t: Tensor) -> UserHistories:
        """User b's history restricted to events strictly before time t (at least one pad column)."""
        kv = int(visible_count(hist.video_time[b:b + 1], t.view(1, 1)))
        kc = int(visible_count(hist.comment_time[b:b + 1], t.view(1, 1)))
        Lv, Lc = max(kv, 1), max(kc, 1)
        vid = hist.video_ids.new_zeros(1, Lv)
        vt = hist.video_time.new_full((1, Lv), float("inf"))
        cv = hist.comment_video_ids.new_zeros(1, Lc)
        cc = hist.comment_ids.new_zeros(1, Lc, hist.comment_ids.shape[2])
        ct = hist.comment_time.new_full((1, Lc), float("inf"))
        vid[0, :kv], vt[0, :kv] = hist.video_ids[b, :kv], hist.video_time[b, :kv]
        cv[0, :kc], cc[0, :kc], ct[0, :kc] = hist.comment_video_ids[b, :kc], hist.comment_ids[b, :kc], hist.comment_time[b, :kc]
        return UserHistories(vid, vt, cv, cc, ct)

    @torch.no_grad()
    def _naive(self, hist: UserHistories, query: VideoQuery | CommentQuery,
               user_fn: Callable[[States, int, int], Tensor], item_fn: Callable[[Tensor], Tensor],
               bias_fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Reference: one forward pass per query over the history truncated to t < query time."""
        B, Q, _ = query.candidates.shape
        out = torch.full(query.candidates.shape, float("-inf"), device=self.device)
        for b in range(B):
            for q in range(Q):
                states = self._states(self._truncated(hist, b, query.time[b, q]))
                c = query.candidates[b, q][None, None]
                out[b, q] = self.model.score(user_fn(states, b, q), item_fn(c))[0, 0]
                if bias_fn is not None:
                    out[b, q] += bias_fn(c)[0, 0]
        return out.masked_fill(query.candidates == 0, float("-inf"))

    def score_videos_naive(self, hist: UserHistories, query: VideoQuery) -> Tensor:
        hist, query = hist.to(self.device), query.to(self.device)
        self._fill_new(hist, [query.candidates], [])
        return self._naive(hist, query, lambda s, b, q: self.model.user_video(s, query.time[b, q].view(1, 1)),
                           self.model.video_item)

    def score_comments_naive(self, hist: UserHistories, query: CommentQuery) -> Tensor:
        hist, query = hist.to(self.device), query.to(self.device)
        self._fill_new(hist, [query.video_ids], [query.candidates])
        return self._naive(hist, query, lambda s, b, q: self.model.user_comment(
            s, query.time[b, q].view(1, 1), query.video_ids[b, q].view(1, 1)), self.model.comment_item,
            self.model.comment_bias)

    # ----- checkpoints ---------------------------------------------------------------------------
    def save(self, folder: Path | str, *, data_fingerprint: str, seed: int, metrics: dict | None = None,
             extra: dict | None = None) -> Path:
        """Write the checkpoint folder, with the tuned LM part and (serving export) the text projection when
        this recommender has them."""
        if self.new_items is not None:
            raise ValueError("this LSVCR was mapped onto a later catalogue for serving; save the checkpoint it was "
                             "loaded from instead")
        cfg = self.config or LSVCRConfig(sr=self.model.cfg, seed=seed)
        tensors = {TEXT_FILE: self.tables.tensors()}
        extra = dict(extra or {})
        if self.tuned_lm is not None:
            extra["tuned_lm"] = self.tuned_lm.spec.to_dict()
            if self.tuned_lm.spec.file is not None:
                tensors[self.tuned_lm.spec.file] = self.tuned_lm.tensors
        if self.text_projection is not None:
            tensors[PROJECTION_FILE] = self.text_projection.state_dict()
        return save_checkpoint(folder, kind=KIND, hyperparameters=cfg.to_dict(), state=self.model.state_dict(),
                               catalogue=self.catalogue, data_fingerprint=data_fingerprint, seed=seed,
                               training_metrics=metrics, extra=extra, extra_tensors=tensors)

    @classmethod
    def from_checkpoint(cls, folder: Path | str, *, catalogue: Catalogue | None = None, name: str = "lsvcr",
                        device: str = "cpu", text_cache: Path | str | None = DEFAULT_TEXT_CACHE) -> LSVCRRecommender:
        """Load and validate (weights digest, catalogue, tensor shapes, text tables, tuned LM part).

        `catalogue`: the data's. It may add videos and comments to the training catalogue (every trained id
        kept, with its text): the model is then mapped onto it and new items are embedded by the tuned LM
        when first scored (models/lsvcr/serving.py), their embeddings cached under `text_cache` (None: no
        cache)."""
        folder = Path(folder)
        ck = load_checkpoint(folder, kind=KIND, catalogue=catalogue, allow_new_items=True)
        try:
            cfg = LSVCRConfig.from_dict(ck.config["hyperparameters"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{folder}/config.json has invalid LSVCR hyperparameters: {e}") from e
        if cfg.sr.n_videos != ck.catalogue.n_videos:
            raise CheckpointError(f"{folder}: config says {cfg.sr.n_videos} videos, the stored catalogue has "
                                  f"{ck.catalogue.n_videos}")
        check_state_shapes(ck.state, LSVCRSR(cfg.sr).state_dict(), folder)
        path = folder / TEXT_FILE
        if not path.exists():
            raise CheckpointError(f"{path} is missing; re-train the LSVCR checkpoint")
        try:
            tables = TextTables.load(path)
            tables.check_catalogue(ck.catalogue, str(path))
        except ValueError as e:
            raise CheckpointError(str(e)) from e
        if tables.dim != cfg.sr.lm_dim:
            raise CheckpointError(f"{path}: embeddings are {tables.dim}-d, the model expects {cfg.sr.lm_dim}-d")
        tuned, projection = _text_encoding_parts(folder, ck.config, cfg)
        state, mapping = ck.state, None
        if catalogue is not None and catalogue.digest() != ck.catalogue.digest():  # a later catalogue (checked)
            mapping = CatalogueMap.between(ck.catalogue, catalogue)
            cfg = replace(cfg, sr=replace(cfg.sr, n_videos=catalogue.n_videos, n_comments=catalogue.n_comments))
            state, tables = mapping.state(state), mapping.tables(tables)
        model = LSVCRSR(cfg.sr)
        model.load_state_dict(state)
        rec = cls(model, catalogue if catalogue is not None else ck.catalogue, tables, name=name,
                  digest=ck.digest, device=device, config=cfg, tuned_lm=tuned, text_projection=projection)
        if mapping is not None and catalogue is not None:
            usable = tuned is not None and (projection is not None or not cfg.sr.text_projected)
            reason = "" if usable else unavailable_reason(str(folder), has_text=cfg.sr.use_text,
                                                          is_export=cfg.sr.text_projected,
                                                          has_projection=projection is not None)
            encoder = TextEncoder(tuned, text_cache, device=device) if usable and tuned is not None else None
            rec.new_items = NewItems(catalogue, mapping.new_videos, mapping.new_comments, encoder,
                                     projection if cfg.sr.text_projected else None, reason)
        return rec


def _text_encoding_parts(folder: Path, config: dict, cfg: LSVCRConfig) -> tuple[TunedLM | None, TextProjection | None]:
    """The checkpoint's tuned LM part and (serving export) text projection, validated; None where absent
    (checkpoints written before they were saved, the no_text ablation)."""
    tuned = projection = None
    record = config.get("tuned_lm")
    try:
        if record is not None:
            tuned = TunedLM.load(folder, record)
            if not cfg.sr.text_projected and tuned.spec.hidden != cfg.sr.lm_dim:
                raise ValueError(f"its LM is {tuned.spec.hidden}-d, the text MLP expects {cfg.sr.lm_dim}-d")
        if (folder / PROJECTION_FILE).exists() and PROJECTION_FILE in config.get("files", {}):
            projection = TextProjection.from_state(load_file(str(folder / PROJECTION_FILE)))
            if projection.adapter.out_features != cfg.sr.hidden or (
                    tuned is not None and projection.text_mlp[0].in_features != tuned.spec.hidden):
                raise ValueError(f"{PROJECTION_FILE} does not fit the model's width or its LM's")
    except (ValueError, RuntimeError) as e:
        raise CheckpointError(f"{folder}: the tuned language model part is unusable ({e}); re-train the LSVCR "
                              f"checkpoint ({TUNED_LM_FILE} and config.json 'tuned_lm' come from the same run)") from e
    return tuned, projection


def load_lsvcr(folder: Path | str, *, catalogue: Catalogue | None = None, name: str = "lsvcr",
               device: str = "cpu") -> LSVCRRecommender:
    """Loader registered in `models.adapters.KIND_LOADERS` for kind "lsvcr"."""
    return LSVCRRecommender.from_checkpoint(folder, catalogue=catalogue, name=name, device=device)
