"""A serving export of an LSVCR checkpoint: the item vectors instead of the language model's embeddings.

At serving time the SR model reads a title or comment only through A t(e): the text MLP and the adapter
applied to the tuned LM's embedding e (384-d for MiniLM). Storing A t(e) itself (64-d) gives the same
scores from a checkpoint six times smaller (the default world: 8 MB of float16 item vectors instead of
48 MB of embeddings), which is what lets the harness ship its default LSVCR checkpoint in the repository.
The exported model has `text_projected=True` (identity text MLP and adapter); it scores, it is not trained
further. Scores differ from the source's by the float16 rounding of the vectors (tests/models pin it).
To score videos and comments it was not exported with, the export keeps the source's tuned LM part
(`tuned_lm.safetensors`, models/lsvcr/tuned_lm.py) and its text MLP + adapter
(`text_projection.safetensors`, 0.2M floats), so a new text gets the row the export would have stored
for it (models/lsvcr/serving.py).

    python -m models.lsvcr.export SOURCE_FOLDER DEST_FOLDER

A per-task pair (kind `lsvcr_per_task`, models/lsvcr/pair.py) is exported part by part and assembled again.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from models.checkpoint import read_config, record_training_data
from models.lsvcr.adapter import LSVCRRecommender
from models.lsvcr.pair import KIND as PAIR_KIND
from models.lsvcr.pair import PARTS, save_pair
from models.lsvcr.sr_model import LSVCRSR, TextProjection
from models.lsvcr.text import TextTables

# config.json keys carried over from the source checkpoint: the replay checks training_data; the rest is
# the provenance train_lsvcr records (models/lsvcr/train.py). training_metrics, data_fingerprint, seed and
# text_digest are carried below; the keys save_checkpoint computes describe the export itself.
CARRIED = ("training_data", "ablation", "llm_path", "stage", "eval_candidates_key", "stage1")


@torch.no_grad()
def export_serving(source: Path | str, dest: Path | str) -> Path:
    """Write the serving export of the checkpoint at `source` to `dest` (atomically); returns `dest`.
    A per-task pair (models/lsvcr/pair.py) is exported part by part and assembled again."""
    meta = read_config(source)
    if meta["kind"] == PAIR_KIND:
        return _export_pair(Path(source), Path(dest), meta)
    src = LSVCRRecommender.from_checkpoint(source)
    if src.model.cfg.text_projected:
        raise ValueError(f"{source} is already a serving export")
    if src.config is None:
        raise ValueError(f"{source} lacks its LSVCR configuration")
    m = src.model
    title = m._dense_text(m.title_emb, m.title_has, None)
    comment = m._dense_text(m.comment_emb, m.comment_has, None)
    sr = replace(m.cfg, lm_dim=m.cfg.hidden, text_projected=True)
    model = LSVCRSR(sr)
    state = {k: v for k, v in m.state_dict().items() if not k.startswith(("text_mlp.", "adapter."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"serving export: state mismatch (missing {missing}, unexpected {unexpected})")
    tables = TextTables(title, m.title_has.cpu(), comment, m.comment_has.cpu())
    # new titles and comments still need e -> A t(e): the tuned LM part and the text MLP + adapter come along
    projection = TextProjection.from_state({k: v.cpu() for k, v in m.state_dict().items()
                                            if k.startswith(("text_mlp.", "adapter."))}) if sr.use_text else None
    rec = LSVCRRecommender(model, src.catalogue, tables, name=src.name, config=replace(src.config, sr=sr),
                           tuned_lm=src.tuned_lm, text_projection=projection)
    extra = {k: meta[k] for k in CARRIED if k in meta}
    # the stored catalogue holds ids only: keep the source's digest of the texts it was trained on
    extra["text_digest"] = meta.get("text_digest")
    extra["serving_export_of"] = {"weights_sha256": meta["weights_sha256"], "code_version": meta.get("code_version"),
                                  "environment": meta.get("environment")}  # where the weights were trained
    return rec.save(dest, data_fingerprint=meta["data_fingerprint"], seed=int(meta["seed"]),
                    metrics=meta.get("training_metrics"), extra=extra)


def _export_pair(source: Path, dest: Path, meta: dict) -> Path:
    with tempfile.TemporaryDirectory(prefix=".export-", dir=dest.parent if dest.parent.exists() else None) as tmp:
        parts = {p: export_serving(source / meta["parts"][p]["folder"], Path(tmp) / p) for p in PARTS}
        save_pair(dest, parts["video"], parts["comment"])
    if meta.get("training_data") is not None and read_config(dest).get("training_data") is None:
        record_training_data(dest, meta["training_data"])  # `harness train` records it on the pair only
    return dest


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m models.lsvcr.export SOURCE_FOLDER DEST_FOLDER", file=sys.stderr)
        return 3
    out = export_serving(Path(args[0]), Path(args[1]))
    print(f"wrote the serving export of {args[0]} to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
