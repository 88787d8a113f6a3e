"""The logged-session schema: every table, column, type, nullability and meaning, in one place.

Everything that reads or writes logs (the store, validation, the simulator, the KuaiRand importer,
the replay) takes its column list from here, so the contract in docs/architecture.md ("Contract 1:
logged sessions") has one source of truth.
Extra columns beyond these are allowed and kept (e.g. simulator diagnostics); missing required
columns are an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    nullable: bool
    meaning: str

    @property
    def duckdb_type(self) -> str:
        """The DuckDB SQL type that stores this column's Arrow type (used for casts and empty views)."""
        return duckdb_type(self.type)


def duckdb_type(t: pa.DataType) -> str:
    """DuckDB SQL type name for the Arrow types the schema uses."""
    if pa.types.is_timestamp(t):
        return {"s": "TIMESTAMP_S", "ms": "TIMESTAMP_MS", "us": "TIMESTAMP", "ns": "TIMESTAMP_NS"}[t.unit]
    for check, name in (
        (pa.types.is_boolean, "BOOLEAN"),
        (pa.types.is_int8, "TINYINT"),
        (pa.types.is_int16, "SMALLINT"),
        (pa.types.is_int32, "INTEGER"),
        (pa.types.is_int64, "BIGINT"),
        (pa.types.is_float32, "FLOAT"),
        (pa.types.is_float64, "DOUBLE"),
        (pa.types.is_string, "VARCHAR"),
        (pa.types.is_large_string, "VARCHAR"),
    ):
        if check(t):
            return name
    raise TypeError(f"no DuckDB type mapping for Arrow type {t}")


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    meaning: str
    required: bool = True  # a dataset may lack an optional table (it is then empty)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}")

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])


C = Column
TS = pa.timestamp("us")

USERS = Table(
    "users",
    (
        C("user_id", pa.int64(), False, "user key"),
        C("activity_level", pa.string(), True, "segment: low / medium / high activity in the pre-period "
          "(null: no pre-period activity)"),
        C("comment_level", pa.string(), True, "segment: rare / occasional / frequent comment-section use in the "
          "pre-period (null: no pre-period activity)"),
        C("signup_day", pa.int32(), True, "day of signup relative to the experiment start (negative = before)"),
    ),
    ("user_id",),
    "users with optional features used for segments",
)

VIDEOS = Table(
    "videos",
    (
        C("video_id", pa.int64(), False, "video key"),
        C("title", pa.string(), True, "title text; null where the source has no text (KuaiRand)"),
        C("duration_s", pa.float64(), False, "video duration in seconds"),
        C("author_id", pa.int64(), True, "uploader"),
    ),
    ("video_id",),
    "the item catalogue",
)

COMMENTS = Table(
    "comments",
    (
        C("comment_id", pa.int64(), False, "comment key"),
        C("video_id", pa.int64(), False, "the video the comment is under"),
        C("text", pa.string(), True, "comment text; null where the source has no text"),
        C("like_count", pa.int64(), False, "likes the comment had when the log was taken"),
    ),
    ("comment_id",),
    "comments under each video",
    required=False,
)

REQUESTS = Table(
    "requests",
    (
        C("request_id", pa.int64(), False, "request key: one feed refresh"),
        C("user_id", pa.int64(), False, "the user who refreshed"),
        C("ts", TS, False, "time of the request; orders a user's history"),
        C("session_id", pa.int64(), False, "app session the request belongs to"),
    ),
    ("request_id",),
    "one feed refresh per row",
)

IMPRESSIONS = Table(
    "impressions",
    (
        C("request_id", pa.int64(), False, "the request"),
        C("video_id", pa.int64(), False, "the video shown"),
        C("position", pa.int32(), False, "slot in the slate, 0-based"),
        C("propensity", pa.float64(), True,
          "probability that the logging policy showed this video in this slot (marginal); "
          "null where unknown (standard traffic of imported public logs)"),
        C("is_random", pa.bool_(), False, "uniformly random exposure traffic"),
        C("watch_time_s", pa.float64(), False, "seconds watched"),
        C("liked", pa.bool_(), False, "user liked the video"),
        C("opened_comments", pa.bool_(), False, "user opened the comment section"),
        C("comment_watch_time_s", pa.float64(), False, "seconds spent in the comment section"),
    ),
    ("request_id", "position"),
    "every video shown in a request with what the user did",
)

CANDIDATES = Table(
    "candidates",
    (
        C("request_id", pa.int64(), False, "the request"),
        C("video_id", pa.int64(), False, "a candidate the logging policy ranked (shown or not)"),
    ),
    ("request_id", "video_id"),
    "the candidate set of each request",
    required=False,
)

COMMENT_IMPRESSIONS = Table(
    "comment_impressions",
    (
        C("request_id", pa.int64(), False, "the request"),
        C("video_id", pa.int64(), False, "the video whose comment section was opened"),
        C("comment_id", pa.int64(), False, "the comment shown"),
        C("position", pa.int32(), False, "rank in the comment list, 0-based"),
        C("propensity", pa.float64(), True, "probability the logging policy showed this comment at this rank"),
        C("dwell_s", pa.float64(), False, "seconds spent on this comment"),
        C("liked", pa.bool_(), False, "user liked the comment"),
        C("replied", pa.bool_(), False, "user replied to the comment"),
    ),
    ("request_id", "video_id", "comment_id"),
    "comments shown after the user opened the comment section",
    required=False,
)

TABLES: dict[str, Table] = {
    t.name: t for t in (USERS, VIDEOS, COMMENTS, REQUESTS, IMPRESSIONS, CANDIDATES, COMMENT_IMPRESSIONS)
}
TABLE_ORDER: tuple[str, ...] = tuple(TABLES)
