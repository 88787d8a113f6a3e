"""Import KuaiRand (public Kuaishou logs, CC BY-SA 4.0) into the log schema.

KuaiRand log files (``log_standard_*.csv``, ``log_random_*.csv``) are CSVs with the header
``user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,
long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab``;
optional ``user_features*.csv`` (``user_id,user_active_degree,...``) and ``video_features_basic*.csv``
(``video_id,author_id,...,video_duration,...``) sit next to them. DuckDB reads them (typed, parallel).

Mapping (one KuaiRand row = one impression):
  users        every user_id in the logs; activity_level from user_active_degree
               (full_active/high_active -> high, middle_active -> medium, low_active -> low, else null);
               comment_level and signup_day null.
  videos       every video_id in the logs; duration_s = video_duration / 1000 from the basic video
               features when present and non-null, else the most frequent duration_ms / 1000 in the logs,
               else 0 (0 = unknown; validation skips the watch-time ratio check for it);
               author_id from the features, else null; title null (KuaiRand has no text).
  requests     KuaiRand has no request ids. Rule: a user's impressions with the same is_rand and tab in
               the same clock minute (floor(time_ms / 60000)) form one feed refresh, split into chunks of
               at most K (= slate_size) in time order. request_id numbers the requests by
               (user_id, first time_ms, is_rand, tab, minute, chunk), so within a user request_id order
               is time order; ts = first time_ms of the request (UTC). A new session starts when a user's
               request comes more than `session_gap_min` minutes after the previous one.
  impressions  position = rank in time order within the request (0-based);
               watch_time_s = play_time_ms / 1000; liked = is_like = 1;
               opened_comments = is_comment = 1 or comment_stay_time > 0;
               comment_watch_time_s = comment_stay_time / 1000 (null -> 0); is_random = is_rand = 1;
               propensity = 1 / random_pool_size on random rows when the pool size is given (the random
               slot shows a video drawn uniformly from that pool), else null; null on standard traffic
               (the production policy's propensities are not published).
  comments, candidates, comment_impressions: empty (the format has no comment text, no candidate sets
               and no comment-level impressions).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from harness.logs.store import Format, write_logs
from harness.logs.validate import WATCH_TIME_MAX_RATIO

LOG_COLUMNS: dict[str, str] = {
    "user_id": "BIGINT", "video_id": "BIGINT", "date": "BIGINT", "hourmin": "BIGINT", "time_ms": "BIGINT",
    "is_click": "INTEGER", "is_like": "INTEGER", "is_follow": "INTEGER", "is_comment": "INTEGER",
    "is_forward": "INTEGER", "is_hate": "INTEGER", "long_view": "INTEGER", "play_time_ms": "DOUBLE",
    "duration_ms": "DOUBLE", "profile_stay_time": "DOUBLE", "comment_stay_time": "DOUBLE",
    "is_profile_enter": "INTEGER", "is_rand": "INTEGER", "tab": "INTEGER",
}
REQUIRED_NON_NULL = ("user_id", "video_id", "time_ms", "play_time_ms", "is_rand")
ACTIVITY_LEVELS = {"full_active": "high", "high_active": "high", "middle_active": "medium",
                   "low_active": "low"}
LACKS = (
    "titles and comment text (null, never invented)",
    "candidate sets (empty table)",
    "comment impressions and comments (empty tables)",
    "logging propensities for standard traffic (null)",
)


class KuaiRandFormatError(ValueError):
    """A KuaiRand file that does not match the published format, or an option the data contradicts."""


@dataclass(frozen=True)
class KuaiRandConfig:
    """How to map KuaiRand rows into requests and propensities (see the module docstring)."""

    slate_size: int = 6
    session_gap_min: float = 30.0
    random_pool_size: int | None = None
    clip_watch_time: bool = False

    def __post_init__(self) -> None:
        if self.slate_size < 1:
            raise ValueError(f"slate_size must be >= 1, got {self.slate_size}")
        if self.session_gap_min <= 0:
            raise ValueError(f"session_gap_min must be > 0, got {self.session_gap_min}")
        if self.random_pool_size is not None and self.random_pool_size < 1:
            raise ValueError(f"random_pool_size must be >= 1 or None, got {self.random_pool_size}")


@dataclass
class KuaiRandImportSummary:
    """What the import did; `lacks` lists what the format cannot provide."""

    out: str
    log_files: list[str]
    rows: int
    users: int
    videos: int
    requests: int
    impressions: int
    random_impressions: int
    videos_with_unknown_duration: int
    clipped_watch_times: int
    request_rule: str
    propensity_rule: str
    lacks: list[str] = field(default_factory=lambda: list(LACKS))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lit(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join(_lit(p) for p in paths) + "]"


def _header(path: Path) -> list[str]:
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        return [c.strip() for c in fh.readline().strip().split(",")]


def find_log_files(src: Path) -> list[Path]:
    files = sorted(Path(src).glob("log_*.csv"))
    if not files:
        raise FileNotFoundError(f"no KuaiRand log files (log_*.csv) in {src}; point at the folder holding "
                                "log_standard_*.csv / log_random_*.csv")
    for f in files:
        missing = [c for c in LOG_COLUMNS if c not in _header(f)]
        if missing:
            raise KuaiRandFormatError(f"{f.name}: missing column(s) {', '.join(missing)}; a KuaiRand log "
                                      f"has the header {','.join(LOG_COLUMNS)}")
    return files


def _load_raw(con: duckdb.DuckDBPyConnection, files: list[Path]) -> None:
    """`raw` = all log rows with their file and 1-based line-in-file (for error messages)."""
    cols = "{" + ", ".join(f"'{k}': '{v}'" for k, v in LOG_COLUMNS.items()) + "}"
    try:
        con.execute(f"""
            CREATE TABLE raw AS
            SELECT *, row_number() OVER (PARTITION BY filename ORDER BY __ord) + 1 AS line
            FROM (SELECT *, row_number() OVER () AS __ord
                  FROM read_csv({_sql_list(files)}, header = true, columns = {cols},
                                filename = true, union_by_name = true))""")
    except duckdb.Error as exc:
        raise KuaiRandFormatError(f"cannot read the KuaiRand logs: {exc}") from exc
    for col in REQUIRED_NON_NULL:
        bad = _first_raw(con, f"{col} IS NULL")
        if bad:
            n, fname, line = bad
            raise KuaiRandFormatError(f"{fname} line {line}: {col} is empty ({n} row(s) in all); "
                                      "fill or drop these rows")


def _first_raw(con: duckdb.DuckDBPyConnection, where: str) -> tuple[int, str, int] | None:
    rows = con.sql(f"SELECT count(*) OVER (), filename, line FROM raw WHERE {where} "
                   "ORDER BY filename, line LIMIT 1").fetchall()
    if not rows:
        return None
    n, fname, line = rows[0]
    return int(n), Path(fname).name, int(line)


def _optional_csv(src: Path, pattern: str) -> Path | None:
    files = sorted(src.glob(pattern))
    return files[0] if files else None


def _load_features(con: duckdb.DuckDBPyConnection, src: Path) -> tuple[bool, bool]:
    """Tables `ufeat(user_id, activity_level)` and `vfeat(video_id, author_id, duration_s)` (maybe empty)."""
    levels = ", ".join(f"('{k}', '{v}')" for k, v in ACTIVITY_LEVELS.items())
    con.execute(f"CREATE TABLE levels(degree VARCHAR, level VARCHAR); INSERT INTO levels VALUES {levels}")
    ufile, vfile = _optional_csv(src, "user_features*.csv"), _optional_csv(src, "video_features_basic*.csv")
    if ufile is not None:
        head = _header(ufile)
        if "user_id" not in head:
            raise KuaiRandFormatError(f"{ufile.name}: no user_id column")
        deg = "user_active_degree" if "user_active_degree" in head else "NULL"
        con.execute(f"""CREATE TABLE ufeat AS SELECT CAST(f.user_id AS BIGINT) AS user_id, any_value(l.level) AS activity_level
                        FROM (SELECT user_id, CAST({deg} AS VARCHAR) AS degree
                              FROM read_csv({_lit(ufile)}, header = true, all_varchar = true)) f
                        LEFT JOIN levels l ON l.degree = f.degree GROUP BY 1""")
    else:
        con.execute("CREATE TABLE ufeat(user_id BIGINT, activity_level VARCHAR)")
    if vfile is not None:
        head = _header(vfile)
        if "video_id" not in head:
            raise KuaiRandFormatError(f"{vfile.name}: no video_id column")
        author = "TRY_CAST(author_id AS BIGINT)" if "author_id" in head else "NULL::BIGINT"
        dur = "TRY_CAST(video_duration AS DOUBLE) / 1000" if "video_duration" in head else "NULL::DOUBLE"
        con.execute(f"""CREATE TABLE vfeat AS SELECT CAST(video_id AS BIGINT) AS video_id,
                               any_value({author}) AS author_id, any_value({dur}) AS duration_s
                        FROM read_csv({_lit(vfile)}, header = true, all_varchar = true) GROUP BY 1""")
    else:
        con.execute("CREATE TABLE vfeat(video_id BIGINT, author_id BIGINT, duration_s DOUBLE)")
    return ufile is not None, vfile is not None


def build_tables(src: Path, config: KuaiRandConfig) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """Map the KuaiRand files in `src` to schema tables; returns the tables and summary figures."""
    src = Path(src)
    files = find_log_files(src)
    con = duckdb.connect(":memory:")
    try:
        _load_raw(con, files)
        _load_features(con, src)
        # videos: features duration first, else the most frequent duration in the logs, else 0 (unknown)
        con.execute("""
            CREATE TABLE vids AS
            SELECT d.video_id, CAST(NULL AS VARCHAR) AS title,
                   coalesce(f.duration_s, d.log_duration_s, 0.0) AS duration_s, f.author_id
            FROM (SELECT video_id, mode(duration_ms) FILTER (WHERE duration_ms IS NOT NULL) / 1000 AS log_duration_s
                  FROM raw GROUP BY video_id) d
            LEFT JOIN vfeat f USING (video_id)
            ORDER BY d.video_id""")
        ratio = WATCH_TIME_MAX_RATIO
        over = f"r.play_time_ms / 1000 > {ratio} * v.duration_s AND v.duration_s > 0"
        con.execute(f"CREATE TABLE raw2 AS SELECT r.*, v.duration_s AS v_duration_s, ({over}) AS over_ratio "
                    "FROM raw r JOIN vids v USING (video_id)")
        n_over, = con.sql("SELECT count(*) FILTER (WHERE over_ratio) FROM raw2").fetchall()[0]
        if n_over and not config.clip_watch_time:
            n, fname, line = con.sql("SELECT count(*) OVER (), filename, line FROM raw2 WHERE over_ratio "
                                     "ORDER BY filename, line LIMIT 1").fetchall()[0]
            raise KuaiRandFormatError(
                f"{Path(fname).name} line {line}: play_time_ms is more than {ratio:g}x the video's duration "
                f"({n} row(s) in all); pass clip_watch_time=True (CLI: --clip-watch-time) to clip watch "
                f"time at {ratio:g}x duration, or drop these rows")
        if config.random_pool_size is not None:
            n_rand_videos, = con.sql("SELECT count(DISTINCT video_id) FROM raw WHERE is_rand = 1").fetchall()[0]
            if n_rand_videos > config.random_pool_size:
                raise KuaiRandFormatError(f"random_pool_size={config.random_pool_size} is smaller than the "
                                          f"{n_rand_videos} distinct videos seen in random traffic; give the real pool size")
        k = config.slate_size
        group = "user_id, is_rand, coalesce(tab, -1), minute, chunk"
        con.execute(f"""
            CREATE TABLE imp AS
            WITH b AS (SELECT *, time_ms // 60000 AS minute,
                              (row_number() OVER (PARTITION BY user_id, is_rand, coalesce(tab, -1), time_ms // 60000
                                                  ORDER BY time_ms, filename, line) - 1) // {k} AS chunk
                       FROM raw2),
                 g AS (SELECT *, min(time_ms) OVER (PARTITION BY {group}) AS req_ms,
                              row_number() OVER (PARTITION BY {group} ORDER BY time_ms, filename, line) - 1 AS position
                       FROM b)
            SELECT *, dense_rank() OVER (ORDER BY user_id, req_ms, is_rand, coalesce(tab, -1), minute, chunk) AS request_id
            FROM g""")
        gap_ms = int(config.session_gap_min * 60_000)
        requests = con.sql(f"""
            SELECT request_id, user_id, epoch_ms(req_ms) AS ts,
                   CAST(sum(new_session) OVER (ORDER BY user_id, request_id ROWS UNBOUNDED PRECEDING) AS BIGINT)
                       AS session_id
            FROM (SELECT request_id, user_id, req_ms,
                         CASE WHEN req_ms - lag(req_ms) OVER (PARTITION BY user_id ORDER BY request_id) <= {gap_ms}
                              THEN 0 ELSE 1 END AS new_session
                  FROM (SELECT DISTINCT request_id, user_id, req_ms FROM imp))
            ORDER BY request_id""").to_arrow_table()
        prop = "NULL::DOUBLE" if config.random_pool_size is None else f"{1.0 / config.random_pool_size!r}"
        watch = f"least(play_time_ms / 1000, {ratio} * v_duration_s)" if config.clip_watch_time \
            else "play_time_ms / 1000"
        watch = f"CASE WHEN over_ratio THEN {watch} ELSE play_time_ms / 1000 END"
        impressions = con.sql(f"""
            SELECT request_id, video_id, CAST(position AS INTEGER) AS position,
                   CASE WHEN is_rand = 1 THEN {prop} ELSE NULL END AS propensity,
                   is_rand = 1 AS is_random, {watch} AS watch_time_s,
                   coalesce(is_like, 0) = 1 AS liked,
                   coalesce(is_comment, 0) = 1 OR coalesce(comment_stay_time, 0) > 0 AS opened_comments,
                   coalesce(comment_stay_time, 0) / 1000 AS comment_watch_time_s,
                   is_click, long_view, is_follow, is_forward, is_hate, is_profile_enter,
                   profile_stay_time / 1000 AS profile_stay_time_s, tab, duration_ms / 1000 AS log_duration_s
            FROM imp ORDER BY request_id, position""").to_arrow_table()
        users = con.sql("""SELECT u.user_id, f.activity_level, CAST(NULL AS VARCHAR) AS comment_level,
                                  CAST(NULL AS INTEGER) AS signup_day
                           FROM (SELECT DISTINCT user_id FROM raw) u LEFT JOIN ufeat f USING (user_id)
                           ORDER BY u.user_id""").to_arrow_table()
        videos = con.sql("SELECT * FROM vids ORDER BY video_id").to_arrow_table()
        rows, n_rand = con.sql("SELECT count(*), count(*) FILTER (WHERE is_rand = 1) FROM raw").fetchall()[0]
        unknown_dur, = con.sql("SELECT count(*) FROM vids WHERE duration_s = 0").fetchall()[0]
    finally:
        con.close()
    figures = {"log_files": [f.name for f in files], "rows": int(rows), "random_impressions": int(n_rand),
               "videos_with_unknown_duration": int(unknown_dur),
               "clipped_watch_times": int(n_over) if config.clip_watch_time else 0}
    return {"users": users, "videos": videos, "requests": requests, "impressions": impressions}, figures


def import_kuairand(src: Path, out: Path, *, fmt: Format = "parquet", config: KuaiRandConfig | None = None,
                    overwrite: bool = False) -> KuaiRandImportSummary:
    """Import the KuaiRand files in `src` into validated logs at `out` (nothing written on any error)."""
    config = config or KuaiRandConfig()
    tables, fig = build_tables(src, config)
    write_logs(tables, Path(out), fmt=fmt, overwrite=overwrite)
    pool = config.random_pool_size
    return KuaiRandImportSummary(
        out=str(out), log_files=fig["log_files"], rows=fig["rows"], users=tables["users"].num_rows,
        videos=tables["videos"].num_rows, requests=tables["requests"].num_rows,
        impressions=tables["impressions"].num_rows, random_impressions=fig["random_impressions"],
        videos_with_unknown_duration=fig["videos_with_unknown_duration"],
        clipped_watch_times=fig["clipped_watch_times"],
        request_rule=(f"a user's impressions with the same is_rand and tab in one clock minute, in chunks of "
                      f"at most {config.slate_size}; new session after {config.session_gap_min:g} min idle"),
        propensity_rule=(f"1/{pool} on random traffic (uniform pool of {pool} videos); null on standard traffic"
                         if pool else "null everywhere (random pool size not given; standard policy unknown)"),
    )
