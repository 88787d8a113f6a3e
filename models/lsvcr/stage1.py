"""Stage 1: personalised preference alignment of the SR model with the LLM recommender (docs/lsvcr-method.md).

Per batch (all samples of one task, so in-batch negatives are items of the same kind):

    u  = PreferenceHead(LLM(prompt))                       LLM preference vector, 64-d, unit norm
    s  = SR head of the task-relevant history             video: pooling over the video history;
    s' = the same head over the other history              comment: the watched video attends
    rec   = InfoNCE(s -> target item vector)               target = A t(title) or A t(comment)
    L_SSC = 1/2 InfoNCE(s -> u) + 1/2 InfoNCE(u -> s)
    L_VCC = CE([cos(u, s), cos(u, s')] / tau, 0)
    loss  = LM (decoders) + w_rec rec + w_align (L_SSC + L_VCC)       (1.0 and 0.5 by default)

The SR side has no ID embeddings; its text inputs are the LM's embeddings of titles and comments. The
items a batch reads (targets, watched videos, history items) are embedded inside the graph with the
current LM weights (`Stage1Config.item_grad`, batch_text.py), so rec, L_SSC and L_VCC reach the LM through
the item texts as well as through the prompts, as in the authors' code; every other row comes from a
table of the whole catalogue, computed with no gradient and refreshed once per epoch (re-embedding 60k
texts a step is out of reach on CPU). The text MLP, the SR model, the preference head and the LM's tuned
weights all train. After the last epoch the tuned LM embeds every title and comment once; its tuned
weights (`Stage1Result.lm_state`) go into the checkpoint, to embed new titles and comments at serving time.

With lm_tuning="top" those re-embeddings, and the in-graph embeddings of a batch's items, run only the
tuned top blocks when the caller passes the pre-trained LM's states entering them (`boundary`, see
text.py; `stage1_boundary_layer` says which block): the frozen blocks below give the same states before
and after tuning, so this is the full pass at about top_layers / n_blocks of its cost. The states are
checked against the full LM once at the start (`probe_boundary`). Any other case (LoRA, full, decoders,
other architectures, states that do not reproduce the full pass) runs the full LM.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from models.budget import StepBudget
from models.catalogue import Catalogue
from models.histories import EventLog
from models.lsvcr.batch_text import BatchTextEmbedder
from models.lsvcr.config import SRConfig, Stage1Config
from models.lsvcr.llm import (
    FastEmbedUnavailable,
    LanguageModel,
    PreferenceHead,
    fast_top_supported,
    prompt_states,
    setup_tuning,
    transformer_blocks,
    tuned_state,
)
from models.lsvcr.losses import info_nce, ssc_loss, vcc_loss
from models.lsvcr.prompts import Stage1Samples, build_samples, prompt_and_response
from models.lsvcr.sr_model import LSVCRSR
from models.lsvcr.text import (
    CatalogueBoundary,
    TextTables,
    embed_catalogue,
    embed_catalogue_from_boundary,
    probe_boundary,
)
from models.training_loop import seeded_torch


@dataclass
class Stage1Result:
    sr: LSVCRSR
    tables: TextTables  # the tuned LM's embeddings of every title and comment
    lm_state: dict[str, Tensor]  # the LM weights stage 1 trained; saved with the checkpoint (tuned_lm.py)
    history: list[dict[str, float]] = field(default_factory=list)  # per step losses
    seconds: float = 0.0
    planned_steps: int = 0  # epochs x steps per epoch: what the configuration asked for

    @property
    def steps(self) -> int:
        return len(self.history)

    @property
    def truncated(self) -> bool:
        """Stage 1 ran fewer steps than planned (its time budget ended it): an under-aligned model."""
        return self.steps < self.planned_steps


def install_text(sr: LSVCRSR, tables: TextTables, catalogue: Catalogue) -> None:
    sr.set_text(tables.title_emb, tables.title_has, tables.comment_emb, tables.comment_has,
                torch.from_numpy(catalogue.popular_comment))


def batch_prompts(s: Stage1Samples, lm: LanguageModel, catalogue: Catalogue, cfg: Stage1Config,
                  rng: np.random.Generator) -> list[tuple[str, str]]:
    """(prompt, response) of every sample of the batch, each prompt cut to `cfg.max_prompt_tokens` tokens
    of `lm`'s tokenizer by shortening its texts (prompts.prompt_and_response)."""
    def count(text: str) -> int:
        return len(lm.tokenizer(text, verbose=False)["input_ids"])

    return [prompt_and_response(s, i, catalogue, rng, cfg.words_per_text, count_tokens=count,
                                max_tokens=cfg.max_prompt_tokens, video_items=cfg.prompt_video_items,
                                comment_items=cfg.prompt_comment_items) for i in range(len(s))]


def stage1_batch_losses(sr: LSVCRSR, pref: PreferenceHead, lm: LanguageModel, s: Stage1Samples, catalogue: Catalogue,
                        cfg: Stage1Config, rng: np.random.Generator,
                        items: BatchTextEmbedder | None = None) -> dict[str, Tensor]:
    """All stage-1 losses of one single-task batch. `items`: embeds the batch's item texts inside the
    graph (None: the SR side reads the installed tables only, and no loss reaches the LM through them)."""
    dev = sr.pos_video.weight.device
    t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
    pr = batch_prompts(s, lm, catalogue, cfg, rng)
    state, lm_loss = prompt_states(lm, [p for p, _ in pr], [r for _, r in pr],
                                   max_prompt_tokens=cfg.max_prompt_tokens, max_response_tokens=cfg.max_response_tokens)
    u = pref(state.to(dev))  # (B, 64)
    rows = items(s).to(dev) if items is not None else None
    with sr.text_rows(rows.titles, rows.comments) if rows is not None else nullcontext():
        st = sr.encode(t(s.hv), t(s.hv_time), t(s.hc), t(s.hc_comments_sr), t(s.hc_time),
                       shown_comment=t(s.hv_shown_sr), video_pos=t(s.hv_pos), comment_pos=t(s.hc_pos))
        qt = t(s.time)[:, None]  # (B, 1)
        target = t(s.target)
        if s.task[0] == 0:
            s_vec = sr.pool(st.video, st.video_time, qt)[:, 0]  # (B, d)
            s_alt = sr.pool(st.comment, st.comment_time, qt)[:, 0]
            item = sr.video_item(target)
        else:
            watched = t(s.watched)[:, None]
            s_vec = sr.attend(st.comment, st.comment_time, qt, watched)[:, 0]
            s_alt = sr.attend(st.video, st.video_time, qt, watched)[:, 0]
            item = sr.comment_item(target)
    tau = sr.cfg.temperature
    out = {"rec": info_nce(s_vec, item, tau, ids=target), "ssc": ssc_loss(s_vec, u, tau),
           "vcc": vcc_loss(u, s_vec, s_alt, tau)}
    out["lm"] = lm_loss if lm_loss is not None else torch.zeros((), device=dev)
    out["total"] = cfg.w_lm * out["lm"] + cfg.w_rec * out["rec"] + cfg.w_align * (out["ssc"] + out["vcc"])
    return out


def stage1_boundary_layer(lm: LanguageModel, cfg: Stage1Config) -> int | None:
    """The block whose input states the pre-trained embedding pass should keep for stage 1's fast
    re-embedding (n_blocks - top_layers), or None when stage 1 must re-embed with the full LM."""
    if cfg.lm_tuning != "top" or not fast_top_supported(lm):
        return None
    return max(0, len(transformer_blocks(lm.model)) - cfg.top_layers)


def _batches(samples: Stage1Samples, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Single-task batches (>= 2 samples each, for in-batch negatives), in random order."""
    out = []
    for task in (0, 1):
        idx = rng.permutation(np.flatnonzero(samples.task == task))
        chunks = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
        if len(chunks) > 1 and len(chunks[-1]) < 2:
            chunks[-2] = np.concatenate([chunks[-2], chunks.pop()])
        out += [c for c in chunks if len(c) >= 2]
    return [out[i] for i in rng.permutation(len(out))]


def run_stage1(train: EventLog, catalogue: Catalogue, lm: LanguageModel, pre_tables: TextTables, sr_cfg: SRConfig,
               cfg: Stage1Config, *, seed: int = 0, device: str = "cpu", progress: bool = False,
               log: Callable[[str], None] = print, boundary: CatalogueBoundary | None = None) -> Stage1Result:
    """Align a fresh SR model (no IDs) with the LM; returns it with the tuned LM's text tables.

    `boundary`: the pre-trained LM's states entering block `stage1_boundary_layer(lm, cfg)` (from
    `cached_catalogue_embedding_and_boundary`); optional, it only makes the re-embeddings and the in-graph
    item embeddings cheaper.
    The configs are read, never changed; torch's global random state is seeded inside and restored on
    return (`seeded_torch`). Stage 1 selects no epoch, so it keeps its own loop: its budget only ends it.
    """
    t0 = time.perf_counter()
    fits = boundary is not None and (boundary.layer, boundary.max_tokens) == (stage1_boundary_layer(lm, cfg),
                                                                               cfg.text_max_tokens)
    fast = boundary if fits else None
    if boundary is not None:
        boundary.check_catalogue(catalogue, "run_stage1(boundary=...)")
        if fast is None and cfg.lm_tuning == "top":
            log(f"stage 1: the given boundary states (layer {boundary.layer}, max_tokens {boundary.max_tokens}) do "
                "not fit this LM and config; embedding with the full language model")
    if fast is not None:
        try:
            probe_boundary(lm, catalogue, fast)
        except FastEmbedUnavailable as e:
            log(f"stage 1: {e}; embedding with the full language model")
            fast = None

    def reembed() -> TextTables:
        nonlocal fast
        if fast is not None:
            try:
                return embed_catalogue_from_boundary(lm, catalogue, fast, batch_size=cfg.embed_batch, progress=progress)
            except FastEmbedUnavailable as e:
                log(f"stage 1: {e}; re-embedding with the full language model from now on")
                fast = None
        return embed_catalogue(lm, catalogue, max_tokens=cfg.text_max_tokens, batch_size=cfg.embed_batch,
                               progress=progress)

    with seeded_torch(seed):  # initialisation, dropout and LoRA's initial weights
        rng = np.random.default_rng([seed, 1])
        sr = LSVCRSR(sr_cfg).to(device)
        install_text(sr, pre_tables, catalogue)
        pref = PreferenceHead(lm.hidden_size, sr_cfg.hidden).to(device)
        lm_params = setup_tuning(lm, cfg.lm_tuning, top_layers=cfg.top_layers, lora_r=cfg.lora_r,
                                 lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout)
        groups = [{"params": list(sr.parameters()) + list(pref.parameters()), "lr": cfg.lr}]
        if lm_params:
            groups.append({"params": lm_params, "lr": cfg.lr_lm})
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        all_params = [p for g in groups for p in g["params"]]
        history: list[dict[str, float]] = []
        planned = cfg.epochs * max(1, -(-cfg.n_samples // cfg.batch_size))  # refined by the first epoch's batches
        n_items = cfg.n_comment_items if sr_cfg.use_comments else 0
        items = (BatchTextEmbedder(lm, catalogue, max_tokens=cfg.text_max_tokens, batch_size=cfg.embed_batch,
                                   max_texts=cfg.item_grad_max_texts or None, boundary=fast, log=log)
                 if cfg.item_grad and cfg.lm_tuning != "frozen" else None)
        budget = StepBudget(cfg.max_seconds, start=t0)
        budget.record_eval(0.0)  # nothing to validate: the re-embedding that follows is not budgeted here
        for epoch in range(cfg.epochs):
            if not budget.step_fits():
                break
            if epoch > 0 and cfg.lm_tuning != "frozen":  # refresh the SR side's text inputs once per epoch
                install_text(sr, reembed(), catalogue)
            samples = build_samples(train, catalogue, cfg.n_samples, comment_share=cfg.comment_share,
                                    n_video_items=cfg.n_video_items, n_comment_items=n_items, max_len=sr_cfg.max_len,
                                    swap_p=cfg.swap_p, swap_item_p=cfg.swap_item_p, seed=seed * 1000 + epoch)
            sr.train()
            pref.train()
            lm.model.train(cfg.lm_tuning != "frozen")
            batches = _batches(samples, cfg.batch_size, rng)
            if epoch == 0:
                planned = cfg.epochs * len(batches)
            done = 0
            for b in tqdm(batches, desc=f"stage 1 epoch {epoch + 1}", disable=not progress, leave=False):
                if not budget.step_fits():
                    log(f"stage 1 stops at its time budget ({cfg.max_seconds:.0f} s): {done} of {len(batches)} steps "
                        f"of epoch {epoch + 1} ({budget.step_seconds:.2f} s a step)")
                    break
                t_step = time.perf_counter()
                losses = stage1_batch_losses(sr, pref, lm, samples.take(b), catalogue, cfg, rng, items)
                opt.zero_grad(set_to_none=True)
                losses["total"].backward()
                torch.nn.utils.clip_grad_norm_(all_params, cfg.grad_clip)
                opt.step()
                history.append({k: float(v.detach()) for k, v in losses.items()} | {"task": float(samples.task[b[0]])})
                done += 1
                budget.record_step(time.perf_counter() - t_step)
            tail = history[-max(done, 1):]
            log(f"stage 1 epoch {epoch + 1}: " + "  ".join(
                f"{k} {np.mean([h[k] for h in tail]):.4f}" for k in ("total", "lm", "rec", "ssc", "vcc")))
        lm.model.eval()
        tables = pre_tables if cfg.lm_tuning == "frozen" else reembed()
        install_text(sr, tables, catalogue)
    return Stage1Result(sr.cpu(), tables, tuned_state(lm), history, time.perf_counter() - t0, planned)
