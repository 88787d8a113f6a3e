"""Time of one LSVCR stage-1 step (prompts, LM, SR side, backward, AdamW), with and without in-graph item texts.

    python bench/stage1_step.py                              # the tests' cyclic world, its short texts
    python bench/stage1_step.py --texts data/world           # the same world with titles/comments drawn from a world
    python bench/stage1_step.py --texts data/world --modes table,ingraph,ingraph@0 --steps 10

World: `tests/models/fixtures.cyclic_world` (24 users, `--videos` videos, 4 comments a video, `--requests`
requests a user), so that histories hold 20+ videos. With 60 videos users share most items and a batch
reads ~190 distinct texts; with 600 they share few, and a batch reads about as many as on the default
world (~1,600). Its texts are "video 12" / "comment 7" unless `--texts` names a
logs folder, whose titles and comment texts are then drawn at random (seed 0) for the world's videos and
comments, to give realistic token counts. The LM is the packaged all-MiniLM-L6-v2 (or `--llm`), tuned as
`--tuning` ("top": the states entering the tuned blocks are computed once, as `train_lsvcr` caches them).

Modes (the same samples, batches and seeds; the modes take turns step by step, so a changing load
hits them alike):
- table: the SR side reads the catalogue tables only (`item_grad=False`: no gradient reaches the LM through
  item texts, the behaviour before 2026-12-01);
- ingraph: the batch's item texts are embedded inside the graph (`item_grad=True`, `--max-texts`);
  ingraph@N: at most N distinct texts a step (0 = every text the batch reads).
- MODE:V/C, e.g. table:5/3: histories of V videos and C comment records instead of `--video-items` /
  `--comment-items` (5/3 were the defaults before 2026-12-01: table:5/3 costs what a step cost then).

Prints one JSON line: per mode the median and mean seconds of `--steps` steps after `--warmup`, the
median distinct texts embedded in the graph a step and the prompts' median token count; torch threads,
the machine's 1-minute load average at start and end (a load above the core count means slower figures).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the world comes from tests/models/fixtures.py


def _world(requests: int, videos: int, texts: str | None):
    import pandas as pd
    import pyarrow as pa

    from models.lsvcr.train import prepare_data
    from tests.models.fixtures import cyclic_world

    tables = cyclic_world(n_users=24, n_videos=videos, n_requests=requests, comments_per_video=4)
    if texts:
        rng = np.random.default_rng(0)
        titles = pd.read_parquet(Path(texts) / "videos.parquet")["title"].dropna().to_numpy()
        comments = pd.read_parquet(Path(texts) / "comments.parquet")["text"].dropna().to_numpy()
        for name, col, pool in (("videos", "title", titles), ("comments", "text", comments)):
            df = tables[name].to_pandas()
            df[col] = rng.choice(pool, len(df))
            tables[name] = pa.Table.from_pandas(df, schema=tables[name].schema, preserve_index=False)
    return prepare_data(tables)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", help="logs folder whose titles and comments replace the fixture's texts")
    ap.add_argument("--requests", type=int, default=60, help="requests a user in the cyclic world")
    ap.add_argument("--videos", type=int, default=60,
                    help="videos of the cyclic world (600: a batch reads ~1,500 distinct texts, as on the default world)")
    ap.add_argument("--llm", help="local LM folder (default: the packaged all-MiniLM-L6-v2)")
    ap.add_argument("--tuning", default="top", choices=("top", "lora", "full"))
    ap.add_argument("--modes", default="table,ingraph", help="comma-separated: table, ingraph")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-prompt-tokens", type=int, default=None, help="default: Stage1Config's")
    ap.add_argument("--max-texts", type=int, default=None, help="item_grad_max_texts (default: Stage1Config's)")
    ap.add_argument("--video-items", type=int, default=None, help="n_video_items (default: Stage1Config's)")
    ap.add_argument("--comment-items", type=int, default=None, help="n_comment_items (default: Stage1Config's)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]

    from models.lsvcr.batch_text import BatchTextEmbedder, batch_rows
    from models.lsvcr.config import SRConfig, Stage1Config
    from models.lsvcr.llm import PreferenceHead, load_llm, setup_tuning
    from models.lsvcr.prompts import build_samples
    from models.lsvcr.sr_model import LSVCRSR
    from models.lsvcr.stage1 import (
        _batches,
        batch_prompts,
        install_text,
        stage1_batch_losses,
        stage1_boundary_layer,
    )
    from models.lsvcr.text import embed_catalogue, embed_catalogue_with_boundary

    catalogue, splits = _world(args.requests, args.videos, args.texts)
    base = Stage1Config(lm_tuning=args.tuning)
    over = {k: v for k, v in (("max_prompt_tokens", args.max_prompt_tokens), ("item_grad_max_texts", args.max_texts),
                              ("n_video_items", args.video_items), ("n_comment_items", args.comment_items))
            if v is not None}
    base = replace(base, **over)
    lm = load_llm(args.llm)
    layer = stage1_boundary_layer(lm, base)
    if layer is None:
        pre, boundary = embed_catalogue(lm, catalogue, max_tokens=base.text_max_tokens), None
    else:
        pre, boundary = embed_catalogue_with_boundary(lm, catalogue, layer, max_tokens=base.text_max_tokens)
    n_samples = args.batch * (args.steps + args.warmup) * 2
    samples = build_samples(splits.train, catalogue, n_samples, n_video_items=base.n_video_items,
                            n_comment_items=base.n_comment_items, seed=0)
    out: dict = {"bench": "stage1_step", "texts": args.texts or "fixture", "videos": args.videos, "tuning": args.tuning, "batch": args.batch,
                 "max_prompt_tokens": base.max_prompt_tokens, "n_video_items": base.n_video_items,
                 "n_comment_items": base.n_comment_items, "item_grad_max_texts": base.item_grad_max_texts,
                 "history_items_mean": [round(float((samples.hv > 0).sum(1).mean()), 1),
                                        round(float((samples.hc > 0).sum(1).mean()), 1)]}
    runs = {}
    for mode in args.modes.split(","):
        head, _, items_arg = mode.partition(":")  # MODE:V/C: histories of V videos and C comment records
        name, _, cap = head.partition("@")  # ingraph@N: N distinct texts a step at most (0 = no limit)
        if name not in ("table", "ingraph"):
            raise SystemExit(f"unknown mode {mode!r}: use table, ingraph or ingraph@N, each optionally :V/C")
        cfg = replace(base, item_grad=name == "ingraph", item_grad_max_texts=int(cap or base.item_grad_max_texts))
        own = samples
        if items_arg:
            nv, nc = (int(x) for x in items_arg.split("/"))
            cfg = replace(cfg, n_video_items=nv, n_comment_items=nc)
            own = build_samples(splits.train, catalogue, n_samples, n_video_items=nv, n_comment_items=nc, seed=0)
        lm = load_llm(args.llm)  # fresh weights for every mode
        torch.manual_seed(0)
        sr = LSVCRSR(SRConfig(lm_dim=lm.hidden_size))
        install_text(sr, pre, catalogue)
        pref = PreferenceHead(lm.hidden_size, sr.cfg.hidden)
        lm_params = setup_tuning(lm, args.tuning, top_layers=cfg.top_layers)
        opt = torch.optim.AdamW([{"params": list(sr.parameters()) + list(pref.parameters()), "lr": cfg.lr},
                                 {"params": lm_params, "lr": cfg.lr_lm}])
        items = (BatchTextEmbedder(lm, catalogue, max_tokens=cfg.text_max_tokens, batch_size=cfg.embed_batch,
                                   max_texts=cfg.item_grad_max_texts or None,
                                   boundary=boundary if args.tuning == "top" else None) if cfg.item_grad else None)
        for m in (sr, pref, lm.model):
            m.train()
        runs[mode] = (cfg, lm, sr, pref, opt, items, own, [], [])
    batches = _batches(samples, args.batch, np.random.default_rng(1))[: args.steps + args.warmup]
    tokens: dict[int, list[int]] = {}
    for k, b in enumerate(batches):  # the modes take turns, step by step: a changing load hits them alike
        for cfg, lm, sr, pref, opt, items, own, times, n_texts in runs.values():
            s = own.take(b)
            t = time.perf_counter()
            losses = stage1_batch_losses(sr, pref, lm, s, catalogue, cfg, np.random.default_rng(k), items)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            opt.step()
            if k >= args.warmup:
                times.append(time.perf_counter() - t)
                if items is not None:
                    n_texts.append(sum(r.size for r in batch_rows(s, *items.has, items.max_texts)))
            if k >= args.warmup:
                tokens.setdefault(id(own), []).extend(len(lm.tokenizer(p, verbose=False)["input_ids"]) for p, _ in
                                                      batch_prompts(s, lm, catalogue, cfg, np.random.default_rng(k)))
    for mode, (*_, own, times, n_texts) in runs.items():
        out[mode] = {"median_s": round(float(np.median(times)), 3), "mean_s": round(float(np.mean(times)), 3),
                     "steps": len(times), "texts_in_graph": float(np.median(n_texts)) if n_texts else 0.0,
                     "prompt_tokens_median": float(np.median(tokens[id(own)]))}
    out |= {"threads": args.threads, "load_avg_start": round(load0, 2), "load_avg_end": round(os.getloadavg()[0], 2),
            "cpu_count": os.cpu_count()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
