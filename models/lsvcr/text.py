"""Text tables: the language model's embedding of every title and comment, computed once.

`TextTables` holds `title_emb (V+1, D)` and `comment_emb (C+1, D)` float32 (float16 on disk) (row 0 and rows without text
are zero, flagged by `title_has` / `comment_has`). The SR model maps them through its trainable text
MLP (D -> 256) and adapter (256 -> 64); the LM itself is not needed at serving time.

Embedding 33k short texts with MiniLM takes about a minute and a half on 2 CPU cores, so the embedding
of the *pre-trained* LM (used by stage 1's SR side and by the `no_align` ablation) is cached on disk,
keyed by the LM folder's weights and the texts' digest.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from models.catalogue import Catalogue
from models.lsvcr.llm import LanguageModel, embed_texts

TEXT_FILE = "text_embeddings.safetensors"


@dataclass
class TextTables:
    title_emb: Tensor  # (V+1, D) float32, zero rows where there is no text
    title_has: Tensor  # (V+1,) bool
    comment_emb: Tensor  # (C+1, D)
    comment_has: Tensor  # (C+1,) bool

    def __post_init__(self) -> None:
        if self.title_emb.ndim != 2 or self.comment_emb.ndim != 2 or self.title_emb.shape[1] != self.comment_emb.shape[1]:
            raise ValueError(f"TextTables: title_emb {tuple(self.title_emb.shape)} and comment_emb "
                             f"{tuple(self.comment_emb.shape)} must be (N, D) with the same D")
        if self.title_has.shape[0] != self.title_emb.shape[0] or self.comment_has.shape[0] != self.comment_emb.shape[0]:
            raise ValueError("TextTables: has-text masks must have one entry per row")
        # Values are kept at float16 precision (stored as float16), so a checkpoint round trip is exact.
        self.title_emb = self.title_emb.float().half().float()
        self.comment_emb = self.comment_emb.float().half().float()
        self.title_has, self.comment_has = self.title_has.bool(), self.comment_has.bool()

    @property
    def dim(self) -> int:
        return int(self.title_emb.shape[1])

    def check_catalogue(self, catalogue: Catalogue, where: str = "text tables") -> None:
        V, C = catalogue.n_videos, catalogue.n_comments
        if self.title_emb.shape[0] != V + 1 or self.comment_emb.shape[0] != C + 1:
            raise ValueError(f"{where}: {self.title_emb.shape[0] - 1} titles / {self.comment_emb.shape[0] - 1} "
                             f"comments, but the catalogue has {V} videos / {C} comments")

    def tensors(self) -> dict[str, Tensor]:
        """float16 on disk (half the size); the tables hold float16-exact values, so nothing is lost."""
        return {"title_emb": self.title_emb.half().contiguous(), "title_has": self.title_has.to(torch.uint8),
                "comment_emb": self.comment_emb.half().contiguous(), "comment_has": self.comment_has.to(torch.uint8)}

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor]) -> TextTables:
        missing = [k for k in ("title_emb", "title_has", "comment_emb", "comment_has") if k not in t]
        if missing:
            raise ValueError(f"text embeddings file lacks {missing}")
        return cls(t["title_emb"].float(), t["title_has"].bool(), t["comment_emb"].float(), t["comment_has"].bool())

    def save(self, path: Path) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        save_file(self.tensors(), str(tmp))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> TextTables:
        try:
            return cls.from_tensors(load_file(str(path)))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} is not a readable text-embeddings file ({e})") from e

    @classmethod
    def empty(cls, catalogue: Catalogue, dim: int) -> TextTables:
        V, C = catalogue.n_videos, catalogue.n_comments
        return cls(torch.zeros(V + 1, dim), torch.zeros(V + 1, dtype=torch.bool),
                   torch.zeros(C + 1, dim), torch.zeros(C + 1, dtype=torch.bool))


def _embed_column(lm: LanguageModel, texts: list[str | None], **kw) -> tuple[Tensor, Tensor]:
    has = torch.tensor([isinstance(t, str) and t.strip() != "" for t in texts], dtype=torch.bool)
    emb = torch.zeros(len(texts), lm.hidden_size)
    idx = has.nonzero().squeeze(1).tolist()
    if idx:
        emb[idx] = embed_texts(lm, [texts[i] for i in idx], **kw)  # type: ignore[misc]
    return emb, has


def embed_catalogue(lm: LanguageModel, catalogue: Catalogue, *, max_tokens: int = 32, batch_size: int = 128,
                    progress: bool = False) -> TextTables:
    """Embed every title and comment of the catalogue with `lm` (mean-pooled last hidden states;
    `TextTables` rounds them to float16 precision, exactly what a checkpoint stores)."""
    kw = {"max_tokens": max_tokens, "batch_size": batch_size, "progress": progress}
    te, th = _embed_column(lm, list(catalogue.titles), desc="embedding titles", **kw)
    ce, ch = _embed_column(lm, list(catalogue.comment_texts), desc="embedding comments", **kw)
    return TextTables(te, th, ce, ch)


def text_digest(catalogue: Catalogue) -> str:
    h = hashlib.sha256()
    for t in list(catalogue.titles) + ["\x00"] + list(catalogue.comment_texts):
        h.update(b"\x01" if t is None else t.encode())
        h.update(b"\x00")
    return h.hexdigest()


def lm_digest(path: str | Path) -> str:
    """Identity of an LM folder: names and sizes of its files plus the head of its weight files."""
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(path)}:{p.stat().st_size}".encode())
            if p.suffix in (".safetensors", ".bin"):
                with open(p, "rb") as f:
                    h.update(f.read(1 << 20))
    return h.hexdigest()


def cached_catalogue_embedding(lm: LanguageModel, catalogue: Catalogue, cache_dir: Path | None, *,
                               max_tokens: int = 32, batch_size: int = 128, progress: bool = False) -> TextTables:
    """`embed_catalogue` with the pre-trained LM, cached under `cache_dir` (None = no cache)."""
    if cache_dir is None:
        return embed_catalogue(lm, catalogue, max_tokens=max_tokens, batch_size=batch_size, progress=progress)
    key = hashlib.sha256(f"{lm_digest(lm.path)}|{text_digest(catalogue)}|{max_tokens}".encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"pretrained-text-{key}.safetensors"
    if path.exists():
        tables = TextTables.load(path)
        tables.check_catalogue(catalogue, str(path))
        return tables
    tables = embed_catalogue(lm, catalogue, max_tokens=max_tokens, batch_size=batch_size, progress=progress)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tables.save(path)
    return tables
