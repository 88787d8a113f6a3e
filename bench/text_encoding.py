"""Text-encoding throughput: LSVCR's embedding path against a plain transformers forward, in one run.

    python bench/text_encoding.py                                  # 2,000 texts of data/world
    python bench/text_encoding.py --data /tmp/world0 --n 0 --threads 2      # every title and comment
    python bench/text_encoding.py --checkpoint CK                  # with a checkpoint's tuned LM part

Texts: the world's titles and comment texts (`--n` drawn at random with `--seed`, duplicates kept as the
catalogue has them; 0 = all). The language model is the packaged all-MiniLM-L6-v2 (or `--llm`), with a
checkpoint's tuned blocks when `--checkpoint` names one that has them. Every path runs in this process,
on the same texts, with the same torch threads, after one warm-up batch, `--repeat` times interleaved
(the fastest run of each path is reported, every run is listed):

- plain: the transformers model and tokenizer called as a user would write it: batches of `--batch` texts in input
  order, padded to the longest of the batch, truncated to `--max-tokens`, mean-pooled;
- char_sorted: distinct texts batched in character-count order, as `embed_texts` did before it sorted
  by tokens;
- sorted: `models.lsvcr.llm.embed_texts`: identical texts once, tokenised once, batched by token count
  (little padding), the same model and pooling;
- cold: `tuned_lm.TextEncoder` on an empty cache: `sorted` plus hashing and writing the cache;
- warm: a new `TextEncoder` on the cache the cold run wrote (as a second process would find it): reads
  the cache, embeds nothing, never loads the model.

Prints one JSON line: texts, distinct texts, real and padded tokens of the plain and sorted batches
(and the padded tokens had the batches been sorted by characters, as `embed_texts` did before),
seconds and texts/s of each path, the largest |difference| of the sorted (float32) and cached (float16)
embeddings from the plain ones relative to their largest |value|, the model's load time, torch threads
and the machine's 1-minute load average at start and end (the machine may be shared: a load above the
core count means slower figures than on free cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def world_texts(data: Path, n: int, seed: int) -> list[str]:
    from harness.logs.store import LogStore

    if not data.exists():
        raise SystemExit(f"--data {data} does not exist; create a world with `harness simulate --out {data}`")
    with LogStore.open(data) as store:
        videos = store.query("SELECT title FROM videos WHERE title IS NOT NULL").to_pylist()
        comments = store.query("SELECT text FROM comments WHERE text IS NOT NULL").to_pylist()
    texts = [r["title"] for r in videos] + [r["text"] for r in comments]
    texts = [t for t in texts if t.strip()]
    if 0 < n < len(texts):
        pick = np.random.default_rng(seed).choice(len(texts), size=n, replace=False)
        texts = [texts[i] for i in sorted(pick)]
    return texts


@torch.inference_mode()
def plain_forward(model, tok, texts: list[str], batch: int, max_tokens: int) -> tuple[torch.Tensor, int, int]:
    """Embeddings, real tokens and padded tokens of a plain forward in input order."""
    out, real, padded = [], 0, 0
    for s in range(0, len(texts), batch):
        enc = tok(texts[s:s + batch], padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
        out.append((h * m).sum(1) / m.sum(1).clamp(min=1.0))
        real += int(enc["attention_mask"].sum())
        padded += int(enc["attention_mask"].numel())
    return torch.cat(out), real, padded


@torch.inference_mode()
def char_sorted_forward(model, tok, texts: list[str], batch: int, max_tokens: int) -> torch.Tensor:
    """What `embed_texts` did before this bench: distinct texts batched in character-count order."""
    uniq = sorted(set(texts))
    order = sorted(range(len(uniq)), key=lambda i: len(uniq[i]))
    out = torch.zeros(len(uniq), model.config.hidden_size)
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        enc = tok([uniq[i] for i in idx], padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
        h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
        out[idx] = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
    where = {t: i for i, t in enumerate(uniq)}
    return out[[where[t] for t in texts]]


def sorted_tokens(lm, texts: list[str], batch: int, max_tokens: int) -> tuple[int, int, int]:
    """Real and padded tokens of `embed_texts`' batches (distinct texts in token-count order), and the
    padded tokens of the same texts batched in character-count order (what `embed_texts` did before)."""
    from models.lsvcr.llm import tokens_by_length

    uniq = sorted(set(texts))
    ids, order = tokens_by_length(lm, uniq, max_tokens)

    def padded(order: list[int]) -> int:
        return sum(max(len(ids[i]) for i in order[s:s + batch]) * len(order[s:s + batch])
                   for s in range(0, len(order), batch))

    by_chars = sorted(range(len(uniq)), key=lambda i: len(uniq[i]))
    return sum(len(x) for x in ids), padded(order), padded(by_chars)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/world", help="logs folder of a world (default data/world)")
    ap.add_argument("--n", type=int, default=2000, help="texts drawn from the world (0 = all; default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for every path (default 2)")
    ap.add_argument("--batch", type=int, default=128, help="texts per forward batch (default 128, as training)")
    ap.add_argument("--max-tokens", type=int, default=32, help="truncation (default 32, as training)")
    ap.add_argument("--llm", help="a local Hugging Face model folder (default: the packaged all-MiniLM-L6-v2)")
    ap.add_argument("--checkpoint", help="an LSVCR checkpoint whose tuned LM part to embed with")
    ap.add_argument("--repeat", type=int, default=3, help="runs of every path, interleaved; the fastest is kept")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]

    from models.lsvcr.llm import default_llm_path, embed_texts, load_llm
    from models.lsvcr.tuned_lm import TextEncoder, TunedLM

    texts = world_texts(Path(args.data), args.n, args.seed)
    if args.checkpoint:
        cfg = json.loads((Path(args.checkpoint) / "config.json").read_text())
        if not cfg.get("tuned_lm"):
            raise SystemExit(f"{args.checkpoint} has no saved tuned LM part (config.json 'tuned_lm')")
        tuned = TunedLM.load(Path(args.checkpoint), cfg["tuned_lm"])
    else:
        tuned = TunedLM.from_model(load_llm(args.llm), {}, tuning="frozen", llm_path=args.llm,
                                   max_tokens=args.max_tokens)
    t = time.perf_counter()
    lm = tuned.build()
    load_s = time.perf_counter() - t
    # the plain path calls the same transformers model (tuned blocks included) and its tokenizer directly
    path = tuned.spec.base_lm or default_llm_path()
    model, tok = lm.model.eval(), lm.tokenizer
    max_tokens = tuned.spec.max_tokens
    plain_forward(model, tok, texts[:64], 64, max_tokens)  # warm-up
    embed_texts(lm, texts[:64], max_tokens=max_tokens, batch_size=64)

    # each path `--repeat` times, interleaved, the fastest kept: on a shared machine the load drifts during
    # a run, and interleaving keeps that drift from favouring the path measured at the quieter moment
    times: dict[str, list[float]] = {"plain": [], "char_sorted": [], "sorted": [], "cold": [], "warm": []}
    cache_mb = 0.0
    for _ in range(args.repeat):
        t = time.perf_counter()
        plain, p_real, p_pad = plain_forward(model, tok, texts, args.batch, max_tokens)
        times["plain"].append(time.perf_counter() - t)
        t = time.perf_counter()
        by_chars = char_sorted_forward(model, tok, texts, args.batch, max_tokens)
        times["char_sorted"].append(time.perf_counter() - t)
        t = time.perf_counter()
        ours = embed_texts(lm, texts, max_tokens=max_tokens, batch_size=args.batch)
        times["sorted"].append(time.perf_counter() - t)
        cache = Path(tempfile.mkdtemp(prefix="bench-text-cache-"))
        try:
            cold = TextEncoder(tuned, cache, batch_size=args.batch)
            cold._lm = lm  # the model is loaded already (its load time is reported apart)
            t = time.perf_counter()
            cached = cold.embed(texts)
            times["cold"].append(time.perf_counter() - t)
            warm = TextEncoder(tuned, cache, batch_size=args.batch)
            t = time.perf_counter()
            again = warm.embed(texts)
            times["warm"].append(time.perf_counter() - t)
            assert warm.embedded == 0 and warm._lm is None and torch.equal(again, cached)
            cache_mb = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 1e6
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    s_real, s_pad, c_pad = sorted_tokens(lm, texts, args.batch, max_tokens)
    plain_s, char_s, sorted_s, cold_s, warm_s = (min(times[k]) for k in ("plain", "char_sorted", "sorted", "cold",
                                                                          "warm"))

    scale = float(plain.abs().max())
    n = len(texts)
    out = {
        "bench": "text_encoding", "data": args.data, "texts": n, "distinct_texts": len(set(texts)),
        "model": path if tuned.spec.base_lm else "all-MiniLM-L6-v2 (packaged)",
        "tuned": tuned.spec.tuning, "threads": args.threads, "batch": args.batch, "max_tokens": max_tokens,
        "tokens_real_plain": p_real, "tokens_padded_plain": p_pad,
        "tokens_real_sorted": s_real, "tokens_padded_sorted": s_pad, "tokens_padded_char_sorted": c_pad,
        "plain_s": round(plain_s, 2), "char_sorted_s": round(char_s, 2), "sorted_s": round(sorted_s, 2), "cold_cache_s": round(cold_s, 2),
        "warm_cache_s": round(warm_s, 3), "repeat": args.repeat,
        "all_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "plain_texts_per_s": round(n / plain_s), "char_sorted_texts_per_s": round(n / char_s),
        "sorted_texts_per_s": round(n / sorted_s),
        "cold_cache_texts_per_s": round(n / cold_s), "warm_cache_texts_per_s": round(n / warm_s),
        "speedup_char_sorted": round(plain_s / char_s, 2), "speedup_sorted": round(plain_s / sorted_s, 2),
        "speedup_cold": round(plain_s / cold_s, 2),
        "speedup_warm": round(plain_s / warm_s, 1),
        "max_rel_diff_sorted": float((ours - plain).abs().max()) / scale,
        "max_rel_diff_char_sorted": float((by_chars - plain).abs().max()) / scale,
        "max_rel_diff_cached_fp16": float((cached - plain).abs().max()) / scale,
        "cache_mb": round(cache_mb, 2), "model_load_s": round(load_s, 2),
        "load_avg_start": round(load0, 2), "load_avg_end": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
