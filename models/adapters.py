"""The one interface every recommender is reached through, and the registry of names -> checkpoints.

`Recommender` (the models' data contract): `score_videos(hist, VideoQuery) -> (B, Q, C)` and
`score_comments(hist, CommentQuery) -> (B, Q, C)`, -inf at padded candidates. Implementations also
carry `catalogue` (the index space of their inputs) and `digest` (the checkpoint's weights sha256),
which evaluation and run records read when present.

Names: `base`, `pop`, `lsvcr` and any ablation name resolve to the folder `<models_dir>/<name>`
(default `checkpoints/<name>`); a path to a checkpoint folder works too. The folder's
`config.json["kind"]` picks the loader from `KIND_LOADERS` (an explicit table, imported lazily so the
LSVCR code and its language model load only when used).

`base` is SASRec over video IDs (models/sasrec.py). It has no comment model: its `score_comments`
ranks a video's comments by like count, the production rule, so the replay can still run it.

Like counts: a recommender whose comment scores read like counts (base, pop, LSVCR's like-count prior)
takes others than its catalogue's snapshot through `set_comment_likes(likes (C+1,) | None)`; evaluation
installs the counts as of each query's time (`comment_likes_setter`, `models.evaluation`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from models.batch import CommentQuery, UserHistories, VideoQuery, visible_count
from models.catalogue import Catalogue
from models.checkpoint import (
    CheckpointError,
    check_state_shapes,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from models.pop import comment_like_scores, like_table
from models.sasrec import SASRec, SASRecConfig, reading_window


@runtime_checkable
class Recommender(Protocol):
    name: str

    def score_videos(self, hist: UserHistories, query: VideoQuery) -> Tensor:  # (B, Q, C), -inf at pads
        ...

    def score_comments(self, hist: UserHistories, query: CommentQuery) -> Tensor:  # (B, Q, C), -inf at pads
        ...


# kind (config.json) -> "module:Class.method" or "module:function" taking
# (folder: Path, *, catalogue: Catalogue | None, name: str, device: str) and returning a Recommender.
KIND_LOADERS: dict[str, str] = {
    "sasrec": "models.adapters:SASRecRecommender.load",
    "pop": "models.pop:PopRecommender.load",
    "lsvcr": "models.lsvcr.adapter:load_lsvcr",
    "lsvcr_per_task": "models.lsvcr.pair:load_pair",  # one LSVCR model per task (models/lsvcr/pair.py)
}
KNOWN_NAMES: tuple[str, ...] = ("base", "pop", "lsvcr")
DEFAULT_MODELS_DIR = Path("checkpoints")


def resolve_checkpoint(name_or_path: str | Path, models_dir: Path | str | None = None) -> Path:
    """Folder of a registered name (`<models_dir>/<name>`) or of a checkpoint path."""
    models_dir = Path(models_dir) if models_dir is not None else DEFAULT_MODELS_DIR
    p = Path(name_or_path)
    candidates = [models_dir / str(name_or_path)] if p.name == str(name_or_path) else []
    candidates.append(p)
    for c in candidates:
        if (c / "config.json").exists():
            return c
    raise CheckpointError(
        f"no checkpoint for {str(name_or_path)!r}: looked in {', '.join(str(c) for c in candidates)}. "
        f"Train it with `harness train --model {p.name} --out {models_dir / p.name}` or pass --checkpoints."
    )


def comment_likes_setter(recommender) -> Callable[[np.ndarray | None], None] | None:
    """How to make `recommender` rank comments with given like counts ((C+1,) array; None = its catalogue's
    snapshot): its own `set_comment_likes`, else its SR model's (LSVCR: `LSVCRSR.set_comment_likes`, which
    the adapter does not forward yet); None for a recommender that reads no like counts."""
    own = getattr(recommender, "set_comment_likes", None)
    if callable(own):
        return own
    model_set = getattr(getattr(recommender, "model", None), "set_comment_likes", None)
    catalogue = getattr(recommender, "catalogue", None)
    if not callable(model_set) or catalogue is None:
        return None

    def install(likes: np.ndarray | None) -> None:
        model_set(torch.from_numpy(np.asarray(catalogue.comment_likes if likes is None else likes, np.int64)))

    return install


def _import(target: str):
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def load_recommender(
    name_or_path: str | Path,
    models_dir: Path | str | None = None,
    *,
    catalogue: Catalogue | None = None,
    device: str = "cpu",
) -> Recommender:
    """Resolve a name or path to a checkpoint and load the right adapter (validating the catalogue)."""
    folder = resolve_checkpoint(name_or_path, models_dir)
    kind = read_config(folder)["kind"]
    if kind not in KIND_LOADERS:
        raise CheckpointError(f"{folder}: unknown model kind {kind!r}; known: {sorted(KIND_LOADERS)}")
    try:
        loader = _import(KIND_LOADERS[kind])
    except (ImportError, AttributeError) as e:
        raise CheckpointError(f"{folder}: the code for kind {kind!r} is not available ({e})") from e
    return loader(folder, catalogue=catalogue, name=Path(name_or_path).name, device=device)


class SASRecRecommender:
    """`base`: SASRec video scores from one causal pass per user; comments by like count."""

    kind = "sasrec"

    def __init__(self, model: SASRec, catalogue: Catalogue, name: str = "base", digest: str = "",
                 device: str = "cpu"):
        if model.config.n_items != catalogue.n_videos:
            raise ValueError(f"model has {model.config.n_items} items but the catalogue {catalogue.n_videos} videos")
        self.model = model.to(device).eval()
        self.catalogue = catalogue
        self.name = name
        self.digest = digest
        self.device = device
        self.comment_likes = like_table(catalogue)

    def set_comment_likes(self, likes: np.ndarray | None) -> None:
        """Rank comments by these like counts (C+1,) from now on; None = the catalogue's snapshot."""
        self.comment_likes = like_table(self.catalogue, likes)

    @torch.no_grad()
    def score_videos(self, hist: UserHistories, query: VideoQuery) -> Tensor:
        hist, query = hist.to(self.device), query.to(self.device)
        user = self.model.user_vectors(hist.video_ids, hist.video_time, query.time)  # (B, Q, d)
        return self.model.score(user, query.candidates)

    @torch.no_grad()
    def score_videos_naive(self, hist: UserHistories, query: VideoQuery) -> Tensor:
        """Reference: one forward pass per query over exactly the window the fast path reads."""
        hist, query = hist.to(self.device), query.to(self.device)
        B, Q, C = query.candidates.shape
        T, s = self.model.config.max_len, self.model.config.stride
        last = visible_count(hist.video_time, query.time) - 1
        out = torch.zeros(B, Q, self.model.config.hidden, device=self.device)
        for b in range(B):
            n = int((hist.video_ids[b] != 0).sum())
            for q in range(Q):
                i = min(int(last[b, q]), n - 1)
                if i < 0:
                    continue
                start = s * int(reading_window(torch.tensor(i), T))
                seq = hist.video_ids[b, start:i + 1][None]
                out[b, q] = self.model.encode(seq)[0, -1]
        return self.model.score(out, query.candidates)

    def score_comments(self, hist: UserHistories, query: CommentQuery) -> Tensor:
        return comment_like_scores(self.comment_likes, query)

    def save(self, folder: Path, *, data_fingerprint: str, seed: int, metrics: dict | None = None) -> Path:
        return save_checkpoint(folder, kind=self.kind, hyperparameters=self.model.config.to_dict(),
                               state=self.model.state_dict(), catalogue=self.catalogue,
                               data_fingerprint=data_fingerprint, seed=seed, training_metrics=metrics)

    @classmethod
    def load(cls, folder: Path, *, catalogue: Catalogue | None = None, name: str = "base",
             device: str = "cpu") -> SASRecRecommender:
        ck = load_checkpoint(folder, kind=cls.kind, catalogue=catalogue)
        try:
            config = SASRecConfig(**ck.config["hyperparameters"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{folder}/config.json has invalid SASRec hyperparameters: {e}") from e
        if config.n_items != ck.catalogue.n_videos:
            raise CheckpointError(f"{folder}: config says {config.n_items} items, catalogue has "
                                  f"{ck.catalogue.n_videos} videos")
        model = SASRec(config)
        check_state_shapes(ck.state, model.state_dict(), folder)
        model.load_state_dict(ck.state)
        return cls(model, ck.catalogue, name=name, digest=ck.digest, device=device)
