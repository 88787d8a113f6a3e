"""Stage 2: recommendation-oriented fine-tuning of the SR model (docs/lsvcr-method.md), one joint model for both tasks.

Start from the stage-1 SR weights and text MLP (or fresh ones for the `no_align` / `no_text`
ablations), add the video ID table and the scalar gate (init 1.0); the LM is gone, its embeddings of
every title and comment are fixed inputs. One causal pass per user gives a training query at every
history event:

    video:   -log softmax_v(cos(u_i, item_v) / tau)[v_i]  over all videos (those published by the data's
             last request, `Splits.available`: a later upload is no negative), u_i read as of t_i
    comment: -log softmax(cos(u_j, A t(c)) / tau)[0] over the record's positive c_0 and up to 19
             other comments of the same video (uniform, without replacement)
    ID-text: 1/2 InfoNCE(id -> text) + 1/2 InfoNCE(text -> id) over the distinct videos of the batch
    loss = video + w_comment * comment + 0.1 * ID-text

(`Stage2Config.task` "video" or "comment" trains one model per task, as the paper does: the other task's
term is not computed and validation reads this task alone.)

AdamW (lr 1e-3, weight decay 1e-5). After every epoch the stored validation candidates are scored
(`models.evaluation.evaluate`); the selection metric is the mean of the two tasks' NDCG@5, the best
epoch is kept and training stops after `patience` epochs without improvement. Heavy users are cut
into training segments of `segment_len` predicted events (plus 50 events of context), so one batch's
time masks stay small; batches group segments of similar length (`bucketed_batches`). Cost per step
(default world, 1 thread): the text MLP runs once over every title and the union of the comment rows
the step reads (`LSVCRSR.text_cache`), the comment negatives are drawn without a Python loop;
about 0.8-1.5 s a step, ~107 steps an epoch. The epoch loop (validation after every epoch, the best
epoch's weights, patience, `max_seconds` at step granularity, `stopped_by`) is
`models.training_loop.run_epochs`, shared with `base`: under a budget the last epoch may be partial,
and it is validated like any other. Videos absent from the training histories keep a zero ID row
throughout (re-zeroed after each step), so they are scored by their title alone, in training and at
serving time alike.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.batch import UserHistories, visible_count
from models.budget import StepBudget
from models.catalogue import Catalogue
from models.evaluation import TASKS, EvalCandidates, evaluate
from models.histories import EventLog, Splits
from models.lsvcr.adapter import LSVCRRecommender
from models.lsvcr.config import LSVCRConfig, SRConfig, Stage2Config
from models.lsvcr.losses import id_text_loss
from models.lsvcr.prompts import _comments_by_video
from models.lsvcr.sr_model import LSVCRSR
from models.lsvcr.text import TextTables
from models.training_loop import (
    EpochPass,
    LoopSettings,
    Resume,
    StopReason,
    Validation,
    run_epochs,
    seeded_torch,
)


@dataclass
class Stage2Result:
    recommender: LSVCRRecommender
    best_epoch: int
    best_valid: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch
    seconds: float = 0.0
    # "early_stopping" (converged by the validation rule), "time_budget" (possibly under-trained) or
    # "max_epochs": recorded so a comparison can tell a converged model from a budget-cut one
    # (models.training_loop, shared with base)
    stopped_by: StopReason = "max_epochs"
    resumed_after: list[int] = field(default_factory=list)  # epochs after which earlier calls stopped (resume)


def comment_candidates(hist: UserHistories, off: np.ndarray, by_video: np.ndarray, n_neg: int,
                       rng: np.random.Generator) -> torch.Tensor:
    """(B, Lc, 1 + n_neg) per record: one of the user's comments (uniform) then up to n_neg other
    comments of the same video drawn uniformly without replacement; 0 = pad.

    Vectorised over records (no Python loop): each record's pool (the video's comments, at most a few
    hundred) is laid out as a row of a padded (N, P) matrix; every pool entry gets an i.i.d. uniform
    key, entries that are padding or the user's own comments get +inf, and the n_neg smallest keys are
    the sample. The order statistics of i.i.d. keys make this a uniform draw without replacement
    (a random permutation's prefix); the positive is the user's comment with the smallest key."""
    cv = hist.comment_video_ids.cpu().numpy()
    cc = hist.comment_ids.cpu().numpy()
    out = np.zeros(cv.shape + (1 + n_neg,), np.int64)
    bi, ji = np.nonzero(cv)
    if not len(bi):
        return torch.from_numpy(out)
    mine = cc[bi, ji]  # (N, M), 0 = pad
    has = (mine > 0).any(1)
    bi, ji, mine = bi[has], ji[has], mine[has]
    if not len(bi):
        return torch.from_numpy(out)
    keys = np.where(mine > 0, rng.random(mine.shape), np.inf)
    out[bi, ji, 0] = mine[np.arange(len(mine)), keys.argmin(1)]
    v = cv[bi, ji]
    start, size = off[v], off[v + 1] - off[v]
    P = int(size.max())
    if P == 0:
        return torch.from_numpy(out)
    col = np.arange(P)
    valid = col[None, :] < size[:, None]  # (N, P)
    pool = np.where(valid, by_video[np.minimum(start[:, None] + col[None, :], len(by_video) - 1)], 0)
    ok = valid & ~(pool[:, :, None] == mine[:, None, :]).any(-1)
    keys = np.where(ok, rng.random(pool.shape), np.inf)
    k = min(n_neg, P)
    pick = np.argpartition(keys, k - 1, axis=1)[:, :k] if k < P else np.argsort(keys, axis=1)
    pick = np.take_along_axis(pick, np.argsort(np.take_along_axis(keys, pick, 1), axis=1), 1)
    chosen_ok = np.take_along_axis(ok, pick, 1)
    out[bi, ji, 1:1 + k] = np.where(chosen_ok, np.take_along_axis(pool, pick, 1), 0)
    return torch.from_numpy(out)


@dataclass
class Segments:
    """Training segments: heavy users (thousands of events) are cut into pieces of `segment_len` query
    events, each preceded by up to `context` earlier events that are encoded but not predicted, so a
    batch's (B, L, L) time masks stay small. Ranges are user-local [start, end) indices."""

    user: np.ndarray
    v0: np.ndarray  # first video event encoded
    vq: np.ndarray  # first video event predicted
    v1: np.ndarray
    c0: np.ndarray
    cq: np.ndarray
    c1: np.ndarray

    def __len__(self) -> int:
        return int(self.user.shape[0])


def make_segments(log: EventLog, segment_len: int = 150, context: int = 50) -> Segments:
    cols: dict[str, list[int]] = {k: [] for k in ("user", "v0", "vq", "v1", "c0", "cq", "c1")}
    for u in range(log.n_users):
        vt = log.video_time[log.video_offsets[u]:log.video_offsets[u + 1]]
        ct = log.comment_time[log.comment_offsets[u]:log.comment_offsets[u + 1]]
        nv, nc = len(vt), len(ct)
        starts = list(range(0, max(nv, 1), segment_len))
        for k, a in enumerate(starts):
            b = min(a + segment_len, nv)
            last = k == len(starts) - 1
            cq = 0 if k == 0 else int(np.searchsorted(ct, vt[a], side="left"))
            c1 = nc if last else int(np.searchsorted(ct, vt[b - 1], side="right"))
            vals = (u, max(0, a - context), a, b, max(0, cq - context), cq, c1)
            for key, v in zip(cols, vals, strict=True):
                cols[key].append(v)
    return Segments(**{k: np.asarray(v, np.int64) for k, v in cols.items()})


def bucketed_batches(rows: np.ndarray, seg: Segments, batch: int, rng: np.random.Generator,
                     pool: int = 16) -> list[np.ndarray]:
    """Random batches of segments with similar lengths. A batch is padded to its longest segment, and
    segment lengths range from a few events to 150 (and comment records 0..150), so random batches
    are about 1.7x (videos) and 4x (comments) padding. Shuffle, cut into pools of `pool` batches,
    sort each pool by (video length, comment length), cut it into batches and shuffle the batches:
    every segment is still seen once per epoch in a random batch, at about a third less compute."""
    order = rng.permutation(rows)
    out: list[np.ndarray] = []
    for p in range(0, len(order), batch * pool):
        chunk = order[p:p + batch * pool]
        chunk = chunk[np.lexsort((seg.c1[chunk] - seg.c0[chunk], seg.v1[chunk] - seg.v0[chunk]))]
        out += [chunk[i:i + batch] for i in range(0, len(chunk), batch)]
    return [out[i] for i in rng.permutation(len(out))]


def segment_histories(log: EventLog, seg: Segments, idx: np.ndarray) -> tuple[UserHistories, torch.Tensor, torch.Tensor]:
    """Pack segments into a UserHistories plus (B, L) / (B, Lc) masks of the events to predict."""
    B, M = len(idx), log.comment_top.shape[1]
    L = max(1, int((seg.v1[idx] - seg.v0[idx]).max()))
    Lc = max(1, int((seg.c1[idx] - seg.c0[idx]).max()))
    vid, vt = np.zeros((B, L), np.int64), np.full((B, L), np.inf)
    cv, ct, cc = np.zeros((B, Lc), np.int64), np.full((B, Lc), np.inf), np.zeros((B, Lc, M), np.int64)
    vm, cm = np.zeros((B, L), bool), np.zeros((B, Lc), bool)
    for b, i in enumerate(idx):
        o, oc = log.video_offsets[seg.user[i]], log.comment_offsets[seg.user[i]]
        n = seg.v1[i] - seg.v0[i]
        vid[b, :n] = log.video[o + seg.v0[i]:o + seg.v1[i]]
        vt[b, :n] = log.video_time[o + seg.v0[i]:o + seg.v1[i]]
        vm[b, seg.vq[i] - seg.v0[i]:n] = True
        n = seg.c1[i] - seg.c0[i]
        cv[b, :n] = log.comment_video[oc + seg.c0[i]:oc + seg.c1[i]]
        ct[b, :n] = log.comment_time[oc + seg.c0[i]:oc + seg.c1[i]]
        cc[b, :n] = log.comment_top[oc + seg.c0[i]:oc + seg.c1[i]]
        cm[b, seg.cq[i] - seg.c0[i]:n] = True
    t = torch.from_numpy
    return UserHistories(t(vid), t(vt), t(cv), t(cc), t(ct)), t(vm), t(cm)


def stage2_batch_losses(model: LSVCRSR, hist: UserHistories, cands: torch.Tensor, cfg: Stage2Config,
                        rng: np.random.Generator, known: torch.Tensor, vmask: torch.Tensor | None = None,
                        cmask: torch.Tensor | None = None, unavailable: torch.Tensor | None = None
                        ) -> dict[str, torch.Tensor]:
    """Losses of one batch; `vmask` / `cmask` select the events to predict (default: all).

    The text MLP runs once per step: over every title and over the union of the comment rows the
    step reads (history videos' popular comments, the users' comments, the candidates)."""
    rows = torch.cat([model.popular_comment[hist.video_ids].flatten(), hist.comment_ids.flatten(), cands.flatten()])
    with model.text_cache(comments=rows):
        return _batch_losses(model, hist, cands, cfg, rng, known, vmask, cmask, unavailable)


def _batch_losses(model: LSVCRSR, hist: UserHistories, cands: torch.Tensor, cfg: Stage2Config,
                  rng: np.random.Generator, known: torch.Tensor, vmask: torch.Tensor | None,
                  cmask: torch.Tensor | None, unavailable: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    st = model.encode(hist.video_ids, hist.video_time, hist.comment_video_ids, hist.comment_ids, hist.comment_time)
    zero = model.pos_video.weight.sum() * 0.0
    out: dict[str, torch.Tensor] = {}
    # video task: every event with at least one earlier video event
    qv = hist.video_time
    ok = (hist.video_ids > 0) & (visible_count(hist.video_time, qv) >= 1)
    if vmask is not None:
        ok &= vmask
    if cfg.task == "comment":
        ok = torch.zeros_like(ok)
    if ok.any():
        u = model.user_video(st, qv)[ok]  # (N, d)
        logits = model.score_all_videos(u)
        if unavailable is not None:  # uploads after the data's end are no negatives (Splits.available)
            logits = logits.masked_fill(unavailable, float("-inf"))
        out["video"] = F.cross_entropy(logits, hist.video_ids[ok])
    else:
        out["video"] = zero
    # comment task: every record with a positive and at least one negative
    okc = (cands[..., 0] > 0) & (cands[..., 1] > 0)
    if cmask is not None:
        okc &= cmask
    if cfg.task == "video":
        okc = torch.zeros_like(okc)
    if okc.any():
        u = model.user_comment(st, hist.comment_time, hist.comment_video_ids)  # (B, Lc, d)
        s = model.comment_logits(u[okc], cands[okc])  # (N, 1 + n_neg)
        s = s.masked_fill(cands[okc] == 0, float("-inf"))
        out["comment"] = F.cross_entropy(s, torch.zeros(s.shape[0], dtype=torch.long, device=s.device))
    else:
        out["comment"] = zero
    # ID-text contrast over the batch's distinct (known, titled) history videos
    out["idtext"] = zero
    if model.video_id is not None and model.cfg.use_text and cfg.w_idtext > 0:
        v = torch.unique(torch.cat([hist.video_ids.flatten(), hist.comment_video_ids.flatten()]))
        v = v[(v > 0) & known[v] & model.title_has[v]]
        if len(v) > 512:
            v = v[torch.from_numpy(rng.choice(len(v), 512, replace=False)).to(v.device)]
        if len(v):
            out["idtext"] = id_text_loss(model.video_id(v), model.title_vec(v), model.cfg.temperature)
    out["total"] = out["video"] + cfg.w_comment * out["comment"] + cfg.w_idtext * out["idtext"]
    return out


def known_videos(train: EventLog, n_videos: int) -> torch.Tensor:
    known = torch.zeros(n_videos + 1, dtype=torch.bool)
    known[torch.from_numpy(np.unique(np.concatenate([train.video, train.comment_video])))] = True
    known[0] = False
    return known


@dataclass
class _Stage2Epochs:
    """Stage 2's part of the shared epoch loop: bucketed segment batches, the joint step, validation on
    the mean of the two tasks' NDCG@5 (minus the training loss when no task has validation queries)."""

    model: LSVCRSR
    rec: LSVCRRecommender
    opt: torch.optim.Optimizer
    cfg: Stage2Config
    train: EventLog
    seg: Segments
    rows: np.ndarray  # the segments that carry a training target
    known: torch.Tensor
    off: np.ndarray
    by_video: np.ndarray
    rng: np.random.Generator
    device: str
    splits: Splits
    candidates: EvalCandidates
    catalogue: Catalogue
    sums: dict[str, float] = field(default_factory=dict)  # the epoch's summed losses
    unavailable: torch.Tensor | None = None  # (V+1,) uploads after the data's end (Splits.available)

    def batches(self, epoch: int) -> list[np.ndarray]:
        self.sums = {}
        return bucketed_batches(self.rows, self.seg, self.cfg.batch_users, self.rng)

    def step(self, batch: np.ndarray) -> None:
        model, dev = self.model, self.device
        hist, vmask, cmask = segment_histories(self.train, self.seg, batch)
        cands = comment_candidates(hist, self.off, self.by_video, self.cfg.n_comment_neg, self.rng).to(dev)
        losses = stage2_batch_losses(model, hist.to(dev), cands, self.cfg, self.rng, self.known, vmask.to(dev),
                                     cmask.to(dev), self.unavailable)
        self.opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        if model.video_id is not None:
            with torch.no_grad():
                model.video_id.weight[~self.known] = 0.0
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())

    def validate(self, run: EpochPass) -> Validation:
        sums = {k: v / max(run.steps, 1) for k, v in self.sums.items()} or {
            k: float("nan") for k in ("video", "comment", "idtext", "total")}
        tasks = TASKS if self.cfg.task == "both" else (self.cfg.task,)
        res = evaluate(self.rec, self.splits, self.candidates, self.catalogue, split="valid", tasks=tasks)
        valid = {f"{r.task}_{m}": v for r in res if r.n_queries for m, v in r.metrics.items()}
        ndcg = [r.metrics["ndcg@5"] for r in res if r.n_queries]
        score = float(np.mean(ndcg)) if ndcg else -float(sums["total"])
        summary = (f"loss {sums['total']:.4f} (video {sums['video']:.4f}, comment {sums['comment']:.4f}, id-text "
                   f"{sums['idtext']:.4f})  valid ndcg@5 "
                   + ", ".join(f"{r.task} {r.metrics['ndcg@5']:.4f}" for r in res if r.n_queries))
        return Validation(score, {**sums, **valid, "valid_score": score}, summary, valid)


def run_stage2(splits: Splits, catalogue: Catalogue, candidates: EvalCandidates, tables: TextTables,
               config: LSVCRConfig, *, init_state: dict[str, torch.Tensor] | None = None, device: str = "cpu",
               progress: bool = False, name: str = "lsvcr", log: Callable[[str], None] = print,
               resume: Path | None = None) -> Stage2Result:
    """Fine-tune (see the module docstring); returns the best-validation recommender. `config` is read,
    never changed; torch's global random state is seeded inside and restored on return (`seeded_torch`).
    `resume`: a file where the run's state is kept after every epoch, so a killed run continues from its
    last finished epoch (`models.training_loop.Resume`; the caller deletes it once the model is saved)."""
    t0 = time.perf_counter()
    cfg, seed = config.stage2, config.seed
    sr_cfg: SRConfig = config.sr
    with seeded_torch(seed):  # initialisation and dropout
        rng = np.random.default_rng([seed, 2])
        model = LSVCRSR(sr_cfg)
        if init_state is not None:
            missing, unexpected = model.load_state_dict(init_state, strict=False)
            allowed = {"video_id.weight", "gate", "like_prior.weight", "like_slope"}
            if unexpected or not set(missing) <= allowed:
                raise ValueError(f"stage-1 weights do not fit the stage-2 model: missing {sorted(set(missing) - allowed)}, "
                                 f"unexpected {sorted(unexpected)}")
        model.reset_pad_rows()
        rec = LSVCRRecommender(model, catalogue, tables, name=name, device=device, config=config)
        train = splits.train
        known = known_videos(train, catalogue.n_videos).to(device)
        off, by_video = _comments_by_video(catalogue)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        seg = make_segments(train, cfg.segment_len, sr_cfg.max_len)
        has_video = ((seg.v1 - seg.vq) > 0) & ((seg.v1 - seg.v0) >= 2)
        has_comment = (seg.c1 - seg.cq) > 0
        useful = {"both": has_video | has_comment, "video": has_video, "comment": has_comment}[cfg.task]
        rows = np.flatnonzero(useful)
        if not len(rows):
            raise ValueError("stage 2 needs users with at least 2 video events or 1 comment record in training")
        trainer = _Stage2Epochs(model, rec, opt, cfg, train, seg, rows, known, off, by_video, rng, device, splits,
                                candidates, catalogue, unavailable=splits.later_uploads(device))
        settings = LoopSettings(cfg.epochs, cfg.patience, label="stage 2", progress=progress,
                                score_name="validation NDCG@5 (mean of the tasks)" if cfg.task == "both"
                                else f"validation {cfg.task} NDCG@5")
        # the run's identity; time budgets are left out, as each call's budget is its own (and stage 1's
        # result is in "init")
        what = config.to_dict()
        for stage in ("stage1", "stage2"):
            what[stage] = {k: v for k, v in what[stage].items() if k != "max_seconds"}
        keep = None if resume is None else Resume(resume, opt, {"stage2": rng}, {
            "config": what, "train": train.fingerprint(), "catalogue": catalogue.digest(),
            "init": _state_digest(init_state), "candidates": candidates.key})
        loop = run_epochs(model, trainer, settings, budget=StepBudget(cfg.max_seconds, start=t0), log=log,
                          resume=keep)
    best_valid = loop.best.metrics if loop.best is not None else {}
    return Stage2Result(rec, loop.best_epoch, best_valid, loop.history,
                        loop.seconds_before + time.perf_counter() - t0, loop.stopped_by, loop.resumed_after)


def _state_digest(state: dict[str, torch.Tensor] | None) -> str | None:
    """sha256 of a state dict's names and values: a resumed stage 2 must start from the same stage 1."""
    if state is None:
        return None
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
