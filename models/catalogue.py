"""The item catalogue: external video/comment ids <-> dense indices, 0 being padding everywhere.

Every model, history and query in `models/` speaks in catalogue indices: videos are 1..V, comments
1..C, index 0 is padding (embedding pad rows are zero and never trained). The catalogue is built from
the `videos` and `comments` log tables, sorted by external id so the mapping is deterministic and
independent of row order. A checkpoint stores its catalogue (ids only, no text) and refuses data
whose catalogue differs (compare `digest()`).

`popular_comment[v]` is the video's most-liked comment (ties: smallest comment_id), which LSVCR shows
next to a history video; `comment_likes[j]` is the like count the production ranking sorts by.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from safetensors.numpy import load_file, save_file

CATALOGUE_FILE = "catalogue.safetensors"


def _to_pandas(table: pa.Table | pd.DataFrame, columns: list[str], name: str) -> pd.DataFrame:
    df = table.to_pandas() if isinstance(table, pa.Table) else table
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"table {name!r} lacks column(s) {missing}; it has {list(df.columns)}. "
            f"Pass a table that follows harness/logs/schema.py."
        )
    return df


def _lookup(sorted_ids: np.ndarray, ids) -> np.ndarray:
    """Index (1-based) of each id in `sorted_ids`; 0 where the id is unknown."""
    ids = np.asarray(ids, dtype=np.int64)
    if sorted_ids.size == 0:
        return np.zeros(ids.shape, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, ids)
    pos_c = np.minimum(pos, sorted_ids.size - 1)
    found = sorted_ids[pos_c] == ids
    return np.where(found, pos_c + 1, 0).astype(np.int64)


@dataclass
class Catalogue:
    """Videos 1..V and comments 1..C (index 0 = padding); see the module docstring."""

    video_ids: np.ndarray  # (V,) external video_id of index i+1, strictly increasing
    titles: list[str | None]  # (V+1,) index 0 = None
    comment_ids: np.ndarray  # (C,) external comment_id of index j+1, strictly increasing
    comment_video: np.ndarray  # (C+1,) video index of each comment (0 for pad)
    comment_texts: list[str | None]  # (C+1,)
    popular_comment: np.ndarray  # (V+1,) index of the video's most-liked comment, 0 if none
    comment_likes: np.ndarray = field(default=None)  # (C+1,) like counts, 0 for pad  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.video_ids = np.asarray(self.video_ids, dtype=np.int64)
        self.comment_ids = np.asarray(self.comment_ids, dtype=np.int64)
        self.comment_video = np.asarray(self.comment_video, dtype=np.int64)
        self.popular_comment = np.asarray(self.popular_comment, dtype=np.int64)
        V, C = self.n_videos, self.n_comments
        if self.comment_likes is None:
            self.comment_likes = np.zeros(C + 1, dtype=np.int64)
        self.comment_likes = np.asarray(self.comment_likes, dtype=np.int64)
        for name, arr in (("video_ids", self.video_ids), ("comment_ids", self.comment_ids)):
            if arr.ndim != 1 or (arr.size > 1 and not np.all(np.diff(arr) > 0)):
                raise ValueError(f"Catalogue.{name} must be 1-D and strictly increasing (unique ids)")
        expect = {
            "titles": (len(self.titles), V + 1),
            "comment_video": (self.comment_video.shape[0], C + 1),
            "comment_texts": (len(self.comment_texts), C + 1),
            "popular_comment": (self.popular_comment.shape[0], V + 1),
            "comment_likes": (self.comment_likes.shape[0], C + 1),
        }
        for name, (got, want) in expect.items():
            if got != want:
                raise ValueError(f"Catalogue.{name} has length {got}, expected {want} (V={V}, C={C})")
        if C and (self.comment_video[1:].min() < 1 or self.comment_video.max() > V):
            raise ValueError("Catalogue.comment_video must hold video indices 1..V for every comment")

    @property
    def n_videos(self) -> int:
        return int(self.video_ids.shape[0])

    @property
    def n_comments(self) -> int:
        return int(self.comment_ids.shape[0])

    def video_index(self, ids) -> np.ndarray:
        """Catalogue index of each external video id; unknown ids -> 0 (padding)."""
        return _lookup(self.video_ids, ids)

    def comment_index(self, ids) -> np.ndarray:
        """Catalogue index of each external comment id; unknown ids -> 0 (padding)."""
        return _lookup(self.comment_ids, ids)

    def comments_of(self, video: int) -> np.ndarray:
        """Comment indices under video index `video` (ascending)."""
        return np.flatnonzero(self.comment_video == video).astype(np.int64)

    def digest(self) -> str:
        """sha256 over the ids and the comment->video map (text is not part of the identity)."""
        h = hashlib.sha256()
        for arr in (self.video_ids, self.comment_ids, self.comment_video):
            h.update(np.ascontiguousarray(arr, dtype="<i8").tobytes())
            h.update(b"|")
        return h.hexdigest()

    def text_digest(self, videos: np.ndarray | None = None, comments: np.ndarray | None = None) -> str:
        """sha256 over every title and comment text: worlds that share all ids (other seeds of the synthetic
        world) but not their text are different catalogues to a model.

        `videos` / `comments` (indices 1..V / 1..C, in the order wanted) restrict it to those rows: the
        digest of a later catalogue's rows for the ids of an earlier one equals the earlier catalogue's
        digest exactly when those items kept their texts (`superset_of`)."""
        titles = self.titles if videos is None else [None] + [self.titles[int(i)] for i in videos]
        texts = self.comment_texts if comments is None else [None] + [self.comment_texts[int(j)] for j in comments]
        h = hashlib.sha256()
        for t in list(titles) + ["\x00"] + list(texts):
            h.update(b"\x01" if t is None else str(t).encode())
            h.update(b"\x00")
        return h.hexdigest()

    def superset_of(self, other: Catalogue) -> tuple[np.ndarray, np.ndarray] | None:
        """This catalogue's indices of `other`'s videos and comments, (V_other,) and (C_other,), when this
        one holds every id of `other` with each comment under the same video (a later snapshot of the
        same logs, with new uploads and comments); None otherwise. Texts are not compared here."""
        vi, ci = self.video_index(other.video_ids), self.comment_index(other.comment_ids)
        if (vi == 0).any() or (ci == 0).any():
            return None
        under = np.concatenate([[0], vi])[other.comment_video[1:]]  # this catalogue's index of each comment's video
        if not np.array_equal(self.comment_video[ci], under):
            return None
        return vi, ci

    def describe_difference(self, other: Catalogue) -> str:
        """Human-readable account of how `other` differs from this catalogue ('' when identical)."""
        parts = []
        for what, mine, theirs in (
            ("videos", self.video_ids, other.video_ids),
            ("comments", self.comment_ids, other.comment_ids),
        ):
            only_mine = np.setdiff1d(mine, theirs)
            only_theirs = np.setdiff1d(theirs, mine)
            if only_mine.size or only_theirs.size:
                def ex(a: np.ndarray) -> str:
                    return f" (e.g. {a[:3].tolist()})" if a.size else ""

                parts.append(
                    f"{what}: {mine.size} vs {theirs.size}; {only_mine.size} only in the first{ex(only_mine)}, "
                    f"{only_theirs.size} only in the second{ex(only_theirs)}"
                )
        if not parts and not np.array_equal(self.comment_video, other.comment_video):
            n = int((self.comment_video != other.comment_video).sum())
            parts.append(f"{n} comment(s) sit under a different video")
        return "; ".join(parts)

    @classmethod
    def from_tables(
        cls,
        videos: pa.Table | pd.DataFrame,
        comments: pa.Table | pd.DataFrame | None = None,
    ) -> Catalogue:
        """Build from the `videos` table and (optionally) the `comments` table of the log schema.

        Comments under a video missing from `videos` are an error (the logs are inconsistent).
        """
        vdf = _to_pandas(videos, ["video_id"], "videos")
        if vdf["video_id"].duplicated().any():
            dup = vdf.loc[vdf["video_id"].duplicated(), "video_id"].iloc[0]
            raise ValueError(f"table 'videos' has duplicate video_id {dup}")
        vdf = vdf.sort_values("video_id", kind="stable")
        video_ids = vdf["video_id"].to_numpy(np.int64)
        titles: list[str | None] = [None]
        if "title" in vdf.columns:
            titles += [t if isinstance(t, str) else None for t in vdf["title"].tolist()]
        else:
            titles += [None] * len(video_ids)
        V = len(video_ids)
        if comments is None or len(comments) == 0:
            return cls(video_ids, titles, np.zeros(0, np.int64), np.zeros(1, np.int64), [None],
                       np.zeros(V + 1, np.int64), np.zeros(1, np.int64))
        cdf = _to_pandas(comments, ["comment_id", "video_id"], "comments")
        if cdf["comment_id"].duplicated().any():
            dup = cdf.loc[cdf["comment_id"].duplicated(), "comment_id"].iloc[0]
            raise ValueError(f"table 'comments' has duplicate comment_id {dup}")
        cdf = cdf.sort_values("comment_id", kind="stable")
        cvid = _lookup(video_ids, cdf["video_id"].to_numpy(np.int64))
        if (cvid == 0).any():
            bad = cdf["video_id"].to_numpy()[cvid == 0][0]
            raise ValueError(f"table 'comments' refers to video_id {bad}, which is not in table 'videos'")
        likes = (cdf["like_count"].fillna(0).to_numpy(np.int64) if "like_count" in cdf.columns
                 else np.zeros(len(cdf), np.int64))
        texts: list[str | None] = [None]
        if "text" in cdf.columns:
            texts += [t if isinstance(t, str) else None for t in cdf["text"].tolist()]
        else:
            texts += [None] * len(cdf)
        C = len(cdf)
        cidx = np.arange(1, C + 1)
        # Most-liked comment per video, ties -> smallest comment_id (= smallest index, since sorted).
        order = np.lexsort((cidx, -likes, cvid))
        first = np.ones(C, bool)
        first[1:] = cvid[order][1:] != cvid[order][:-1]
        popular = np.zeros(V + 1, np.int64)
        popular[cvid[order][first]] = cidx[order][first]
        return cls(
            video_ids=video_ids,
            titles=titles,
            comment_ids=cdf["comment_id"].to_numpy(np.int64),
            comment_video=np.concatenate([[0], cvid]).astype(np.int64),
            comment_texts=texts,
            popular_comment=popular,
            comment_likes=np.concatenate([[0], likes]).astype(np.int64),
        )

    # --- storage (ids only; safetensors, never pickle) ---------------------------------------
    def save(self, folder: Path) -> Path:
        path = Path(folder) / CATALOGUE_FILE
        save_file(
            {
                "video_ids": self.video_ids,
                "comment_ids": self.comment_ids,
                "comment_video": self.comment_video,
                "popular_comment": self.popular_comment,
                "comment_likes": self.comment_likes,
            },
            str(path),
            metadata={"digest": self.digest()},
        )
        return path

    @classmethod
    def load(cls, folder: Path) -> Catalogue:
        """Load ids saved by `save` (titles and texts come back as None)."""
        path = Path(folder) / CATALOGUE_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the checkpoint folder has no catalogue")
        try:
            t = load_file(str(path))
        except Exception as e:  # safetensors raises several types on a damaged file
            raise ValueError(f"{path} is not a readable safetensors file ({e}); re-train or re-copy it") from e
        need = ["video_ids", "comment_ids", "comment_video", "popular_comment"]
        missing = [k for k in need if k not in t]
        if missing:
            raise ValueError(f"{path} lacks tensor(s) {missing}")
        V, C = t["video_ids"].shape[0], t["comment_ids"].shape[0]
        return cls(t["video_ids"], [None] * (V + 1), t["comment_ids"], t["comment_video"],
                   [None] * (C + 1), t["popular_comment"], t.get("comment_likes"))
