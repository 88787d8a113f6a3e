"""Text tables: the language model's embedding of every title and comment, computed once.

`TextTables` holds `title_emb (V+1, D)` and `comment_emb (C+1, D)` float32 (float16 on disk) (row 0 and rows without text
are zero, flagged by `title_has` / `comment_has`). The SR model maps them through its trainable text
MLP (D -> 256) and adapter (256 -> 64); the LM itself is not needed at serving time.

Embedding 33k short texts with MiniLM takes about a minute and a half on 2 CPU cores, so the embedding
of the *pre-trained* LM (used by stage 1's SR side and by the `no_align` ablation) is cached on disk,
keyed by the LM folder's weights and the texts' digest.

With lm_tuning="top" only blocks k.. of the LM change in stage 1 (k = n_blocks - top_layers), so the same
pass also keeps every text's states entering block k (`CatalogueBoundary`, cached next to the tables,
keyed additionally by k). Stage 1's re-embeddings then run only the top blocks on them
(`embed_catalogue_from_boundary`), and a warm run needs no LM pass before stage 1.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from models.catalogue import Catalogue
from models.lsvcr.llm import (
    BoundaryStates,
    FastEmbedUnavailable,
    LanguageModel,
    embed_from_boundary,
    embed_from_boundary_with_grad,
    embed_texts,
    embed_texts_with_boundary,
)

TEXT_FILE = "text_embeddings.safetensors"
BOUNDARY_FORMAT = "lsvcr-boundary-1"
# float32: float16 boundary states were measured to move MiniLM's final embeddings by up to 2.5e-4 of their
# largest value (the budget is 1e-4); float32 is exact to ~4e-7 at twice the memory (tests pin both).
BOUNDARY_DTYPE = torch.float32


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
        except (OSError, ValueError, SafetensorError) as e:
            raise ValueError(f"{path} is not a readable text-embeddings file ({e})") from e

    @classmethod
    def empty(cls, catalogue: Catalogue, dim: int) -> TextTables:
        V, C = catalogue.n_videos, catalogue.n_comments
        return cls(torch.zeros(V + 1, dim), torch.zeros(V + 1, dtype=torch.bool),
                   torch.zeros(C + 1, dim), torch.zeros(C + 1, dtype=torch.bool))


@dataclass
class CatalogueBoundary:
    """The pre-trained LM's states entering block `layer` for every title and comment with text.

    `title.index` runs over the catalogue's titles that have text, in row order (likewise comments), so
    `embed_from_boundary(lm, title)` fills exactly the rows `embed_catalogue` fills.
    """

    title: BoundaryStates
    comment: BoundaryStates
    max_tokens: int

    def __post_init__(self) -> None:
        t, c = self.title, self.comment
        if t.layer != c.layer or t.hidden != c.hidden or t.states.dtype != c.states.dtype:
            raise ValueError(f"CatalogueBoundary: title (layer {t.layer}, width {t.hidden}, {t.states.dtype}) and "
                             f"comment (layer {c.layer}, width {c.hidden}, {c.states.dtype}) states disagree")
        longest = max([int(b.offsets.diff().max()) for b in (t, c) if b.n_unique] or [0])
        if longest > self.max_tokens:
            raise ValueError(f"CatalogueBoundary: a text has {longest} tokens, more than max_tokens={self.max_tokens}")

    @property
    def layer(self) -> int:
        return self.title.layer

    @property
    def hidden(self) -> int:
        return self.title.hidden

    @property
    def nbytes(self) -> int:
        return self.title.nbytes + self.comment.nbytes

    def check_catalogue(self, catalogue: Catalogue, where: str = "boundary states") -> None:
        for name, b, texts in (("titles", self.title, catalogue.titles), ("comments", self.comment, catalogue.comment_texts)):
            n = int(has_text(list(texts)).sum())
            if b.index.numel() != n:
                raise ValueError(f"{where}: states for {b.index.numel()} {name}, but the catalogue has {n} {name} "
                                 "with text; recompute them for this catalogue")

    def save(self, path: Path) -> Path:
        """safetensors, written to a temporary file and renamed (never half-written)."""
        path = Path(path)
        t = {f"{k}_{f}": getattr(getattr(self, k), f).contiguous() for k in ("title", "comment")
             for f in ("states", "offsets", "index")}
        meta = {"format": BOUNDARY_FORMAT, "layer": str(self.layer), "max_tokens": str(self.max_tokens)}
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            save_file(t, str(tmp), metadata=meta)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: Path) -> CatalogueBoundary:
        """Read and validate (format, layer, shapes, offsets); ValueError naming the file otherwise."""
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != BOUNDARY_FORMAT:
                    raise ValueError(f"format {meta.get('format')!r}, expected {BOUNDARY_FORMAT!r}")
                t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
            layer, max_tokens = int(meta["layer"]), int(meta["max_tokens"])
            parts = {k: BoundaryStates(layer, t[f"{k}_states"], t[f"{k}_offsets"], t[f"{k}_index"])
                     for k in ("title", "comment")}
            return cls(parts["title"], parts["comment"], max_tokens)
        except (OSError, ValueError, KeyError, SafetensorError) as e:
            raise ValueError(f"{path} is not a valid boundary-states file ({e})") from e


def has_text(texts: list[str | None]) -> Tensor:
    return torch.tensor([isinstance(t, str) and t.strip() != "" for t in texts], dtype=torch.bool)


def _embed_column(lm: LanguageModel, texts: list[str | None], layer: int | None = None,
                  **kw) -> tuple[Tensor, Tensor, BoundaryStates | None]:
    has = has_text(texts)
    emb = torch.zeros(len(texts), lm.hidden_size)
    idx = has.nonzero().squeeze(1).tolist()
    chosen = [texts[i] for i in idx]
    if layer is None:
        if idx:
            emb[idx] = embed_texts(lm, chosen, **kw)  # type: ignore[arg-type]
        return emb, has, None
    e, b = embed_texts_with_boundary(lm, chosen, layer, dtype=BOUNDARY_DTYPE, **kw)  # type: ignore[arg-type]
    emb[idx] = e
    return emb, has, b


def embed_catalogue(lm: LanguageModel, catalogue: Catalogue, *, max_tokens: int = 32, batch_size: int = 128,
                    progress: bool = False) -> TextTables:
    """Embed every title and comment of the catalogue with `lm` (mean-pooled last hidden states;
    `TextTables` rounds them to float16 precision, exactly what a checkpoint stores)."""
    kw = {"max_tokens": max_tokens, "batch_size": batch_size, "progress": progress}
    te, th, _ = _embed_column(lm, list(catalogue.titles), desc="embedding titles", **kw)
    ce, ch, _ = _embed_column(lm, list(catalogue.comment_texts), desc="embedding comments", **kw)
    return TextTables(te, th, ce, ch)


def embed_catalogue_with_boundary(lm: LanguageModel, catalogue: Catalogue, layer: int, *, max_tokens: int = 32,
                                  batch_size: int = 128, progress: bool = False) -> tuple[TextTables, CatalogueBoundary]:
    """`embed_catalogue` (the same numbers) plus the states entering block `layer`, in one pass."""
    kw = {"max_tokens": max_tokens, "batch_size": batch_size, "progress": progress}
    te, th, tb = _embed_column(lm, list(catalogue.titles), layer, desc="embedding titles", **kw)
    ce, ch, cb = _embed_column(lm, list(catalogue.comment_texts), layer, desc="embedding comments", **kw)
    assert tb is not None and cb is not None
    return TextTables(te, th, ce, ch), CatalogueBoundary(tb, cb, max_tokens)


def probe_boundary(lm: LanguageModel, catalogue: Catalogue, boundary: CatalogueBoundary, *, probe: int = 8,
                   rel_tol: float | None = None) -> None:
    """Check that the top blocks on `boundary` reproduce the full LM: up to `probe` titles and `probe`
    comments (spread over the catalogue) are embedded both ways; if any differs by more than `rel_tol` x
    the largest |value| of the full embeddings (1e-4 for float32 states, 2e-3 for float16),
    `FastEmbedUnavailable` is raised (stale states, a transformers change in how blocks are called)."""
    if rel_tol is None:
        rel_tol = 1e-4 if boundary.title.states.dtype == torch.float32 else 2e-3
    for name, b, texts in (("titles", boundary.title, list(catalogue.titles)),
                           ("comments", boundary.comment, list(catalogue.comment_texts))):
        idx = has_text(texts).nonzero().squeeze(1)
        if probe <= 0 or not idx.numel():
            continue
        pick = torch.linspace(0, idx.numel() - 1, min(probe, idx.numel())).round().long().unique()
        with torch.no_grad():
            fast = embed_from_boundary_with_grad(lm, b, b.index[pick]).cpu()
        full = embed_texts(lm, [texts[int(i)] for i in idx[pick]], max_tokens=boundary.max_tokens)
        err = float((fast - full).abs().max())
        scale = max(float(full.abs().max()), 1e-12)
        if not err <= rel_tol * scale:
            raise FastEmbedUnavailable(f"the top-blocks re-embedding of {name} differs from the full pass by "
                                       f"{err:.3g} (> {rel_tol:g} x {scale:.3g}); the stored states do not "
                                       "match this LM")


def embed_catalogue_from_boundary(lm: LanguageModel, catalogue: Catalogue, boundary: CatalogueBoundary, *,
                                  batch_size: int = 128, progress: bool = False, probe: int = 8,
                                  rel_tol: float | None = None) -> TextTables:
    """`embed_catalogue` with the current weights, running only blocks `boundary.layer..` of `lm`.

    Valid when the embeddings and blocks below `boundary.layer` are those that produced `boundary`
    (lm_tuning="top"). As a guard, `probe_boundary(probe, rel_tol)` runs first and raises
    `FastEmbedUnavailable` when the states do not reproduce the full pass; the caller then uses
    `embed_catalogue`.
    """
    boundary.check_catalogue(catalogue)
    probe_boundary(lm, catalogue, boundary, probe=probe, rel_tol=rel_tol)
    cols = []
    for name, b, texts in (("titles", boundary.title, list(catalogue.titles)),
                           ("comments", boundary.comment, list(catalogue.comment_texts))):
        has = has_text(texts)
        fast = embed_from_boundary(lm, b, batch_size=batch_size, progress=progress, desc=f"embedding {name} (top blocks)")
        emb = torch.zeros(len(texts), lm.hidden_size)
        emb[has.nonzero().squeeze(1)] = fast
        cols += [emb, has]
    return TextTables(*cols)


def text_digest(catalogue: Catalogue) -> str:
    return catalogue.text_digest()


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


def _cache_key(lm: LanguageModel, catalogue: Catalogue, max_tokens: int) -> str:
    return hashlib.sha256(f"{lm_digest(lm.path)}|{text_digest(catalogue)}|{max_tokens}".encode()).hexdigest()[:20]


def cached_catalogue_embedding_and_boundary(
        lm: LanguageModel, catalogue: Catalogue, cache_dir: Path | None, *, boundary_layer: int | None,
        max_tokens: int = 32, batch_size: int = 128, progress: bool = False,
) -> tuple[TextTables, CatalogueBoundary | None]:
    """The pre-trained LM's tables and (unless `boundary_layer` is None) its states entering that block,
    both cached under `cache_dir` (None = no cache): `pretrained-text-<key>` and
    `pretrained-boundary-<key>-L<layer>` (safetensors). A cached file that fails validation is reported
    with a warning and recomputed."""
    if boundary_layer is None:
        return cached_catalogue_embedding(lm, catalogue, cache_dir, max_tokens=max_tokens, batch_size=batch_size,
                                          progress=progress), None
    kw = {"max_tokens": max_tokens, "batch_size": batch_size, "progress": progress}
    if cache_dir is None:
        return embed_catalogue_with_boundary(lm, catalogue, boundary_layer, **kw)
    key = _cache_key(lm, catalogue, max_tokens)
    tpath = Path(cache_dir) / f"pretrained-text-{key}.safetensors"
    bpath = Path(cache_dir) / f"pretrained-boundary-{key}-L{boundary_layer}.safetensors"
    if tpath.exists() and bpath.exists():
        try:
            tables = TextTables.load(tpath)
            tables.check_catalogue(catalogue, str(tpath))
            boundary = CatalogueBoundary.load(bpath)
            boundary.check_catalogue(catalogue, str(bpath))
            if (boundary.layer, boundary.max_tokens, boundary.hidden) != (boundary_layer, max_tokens, lm.hidden_size):
                raise ValueError(f"{bpath}: layer {boundary.layer}, max_tokens {boundary.max_tokens}, width "
                                 f"{boundary.hidden}; expected {boundary_layer}, {max_tokens}, {lm.hidden_size}")
            return tables, boundary
        except ValueError as e:
            warnings.warn(f"{e}; recomputing the pre-trained text embeddings", stacklevel=2)
    tables, boundary = embed_catalogue_with_boundary(lm, catalogue, boundary_layer, **kw)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tables.save(tpath)
    boundary.save(bpath)
    return tables, boundary


def cached_catalogue_embedding(lm: LanguageModel, catalogue: Catalogue, cache_dir: Path | None, *,
                               max_tokens: int = 32, batch_size: int = 128, progress: bool = False) -> TextTables:
    """`embed_catalogue` with the pre-trained LM, cached under `cache_dir` (None = no cache)."""
    if cache_dir is None:
        return embed_catalogue(lm, catalogue, max_tokens=max_tokens, batch_size=batch_size, progress=progress)
    path = Path(cache_dir) / f"pretrained-text-{_cache_key(lm, catalogue, max_tokens)}.safetensors"
    if path.exists():
        tables = TextTables.load(path)
        tables.check_catalogue(catalogue, str(path))
        return tables
    tables = embed_catalogue(lm, catalogue, max_tokens=max_tokens, batch_size=batch_size, progress=progress)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tables.save(path)
    return tables
