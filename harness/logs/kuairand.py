"""Import KuaiRand (public Kuaishou logs, CC BY-SA 4.0) into the log schema.

KuaiRand log files (``log_standard_*.csv``, ``log_random_*.csv``) are CSVs with the header
``user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,
long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab``;
optional ``user_features*.csv`` (``user_id,user_active_degree,...``) and ``video_features_basic*.csv``
(``video_id,author_id,...,video_duration,...``) sit next to them. DuckDB reads them (typed, parallel).

Time. ``time_ms`` is epoch milliseconds (an instant); ``date`` (yyyymmdd) and ``hourmin`` (hhmm) are the
same moment on the Beijing clock (UTC+8; China has no daylight saving). Every row's time is ``time_ms``;
a row without ``time_ms`` takes the start of its ``date``/``hourmin`` instead (counted in the summary as
``times_from_date_hourmin``; its position in the request then follows the file order). Where both are
present they must agree: ``time_ms`` read on the Beijing clock must fall in the ``date``/``hourmin``
bucket, else the import fails naming the file, the line and both readings (an 8 h gap means one side was
rewritten in UTC). The bucket is one minute if any ``hourmin`` in the files has minutes other than 00,
else one hour (a file whose ``hourmin`` values are all whole hours is read as hour buckets; the summary
gives ``hourmin_resolution_min``). ``requests.ts`` is the Beijing wall-clock time as a naive timestamp,
so ``ts`` has the same date, hour and minute as KuaiRand's ``date``/``hourmin`` (UTC = ts - 8 h).

Mapping (one KuaiRand row = one impression):
  users        every user_id in the logs; activity_level from user_active_degree
               (full_active/high_active -> high, middle_active -> medium, low_active -> low, else null);
               comment_level and signup_day null.
  videos       every video_id in the logs; duration_s = video_duration / 1000 from the basic video
               features when present and non-null, else the most frequent duration_ms / 1000 in the logs,
               else 0 (0 = unknown); author_id from the features, else null; title null (KuaiRand has no
               text).
  requests     A request is one feed refresh of one user. KuaiRand has no request ids, so:
               1. standard rows (is_rand = 0): a user's rows in the same tab and the same clock minute
                  (floor(time / 60 s)) form one refresh, split into chunks of at most K (= slate_size) in
                  time order;
               2. random-exposure rows (is_rand = 1) are single slots KuaiRand inserted into a normal feed
                  (about 0.37% of impressions, drawn from a pool of 7,583 videos), so each joins the
                  request of that feed: among the user's standard requests whose time span [first, last
                  row] lies within `random_join_window_s` (default 60 s) of the random row, the one in the
                  same tab first, then the nearest in time (distance 0 inside the span), then the earliest.
                  Why 60 s: a request's standard rows lie within one clock minute by rule 1, and an
                  inserted slot is shown between two slots of its feed, so it lies within about one play
                  of the feed's span; 60 s is the same scale as rule 1 and covers the plays of short
                  videos, while a longer window would start attaching rows to unrelated refreshes;
               3. a random row with no standard request of its user within the window (e.g. log_random
                  imported without the log_standard file of the same days) is not forced into a guessed
                  feed: it is kept, grouped with the user's other unmatched random rows of the same tab
                  and minute (chunks of K), in a request that holds random rows only. The summary counts
                  `random_joined` and `random_unmatched`.
               ts = the earliest time in the request (Beijing clock, above); request_id numbers the
               requests in (user_id, ts) order, so within a user request_id order is time order. A new
               session starts when a user's request comes more than `session_gap_min` minutes after the
               start of the previous one.
  impressions  position = rank in time order within the request (0-based; random rows sit between the
               standard rows they were shown between); watch_time_s = play_time_ms / 1000 as logged;
               liked = is_like = 1; opened_comments = is_comment = 1 or comment_stay_time > 0;
               comment_watch_time_s = comment_stay_time / 1000 (null -> 0); is_random = is_rand = 1;
               propensity = 1 / random_pool_size on random rows when the pool size is given (the random
               slot shows a video drawn uniformly from that pool; KuaiRand's pool is 7,583 videos), else
               null; null on standard traffic (the production policy's propensities are not published).
               Extra columns keep the raw signals: wrote_comment (is_comment = 1), comment_stay_time_raw,
               time_ms, is_click, long_view, is_follow, is_forward, is_hate, is_profile_enter,
               profile_stay_time_s, tab, log_duration_s.
  comments, candidates, comment_impressions: empty (the format has no comment text, no candidate sets
               and no comment-level impressions).

Loops. Kuaishou replays a video until the user swipes, so ``play_time_ms`` above ``duration_ms`` is a
real loop, not an error: watch time is kept as logged, however many times the duration (the summary counts
``plays_above_duration``), and validation accepts it (its watch-time check only looks for a wrong unit).
``clip_watch_time=True`` (CLI ``--clip-watch-time``) optionally caps watch time at 10x the duration, for an
analyst who wants to limit the weight of very long loops; it is never needed for the import to succeed.

Uncertain semantics (stated here, in the summary's ``lacks`` and in docs/architecture.md):
  is_comment         KuaiRand documents it as "the user wrote a comment", not "opened the comment
                     section". Writing happens in the comment panel, so it implies an open and counts as
                     one; the open itself is only visible through comment_stay_time > 0. opened_comments
                     therefore undercounts opens that left no stay time, and wrote_comment keeps the flag.
  comment_stay_time  its unit is not documented (the column has no _ms suffix, unlike play_time_ms). It is
                     read as milliseconds, like the other times in the logs; comment_stay_time_raw keeps
                     the value so an analyst can rescale, and the summary gives the median of its non-zero
                     values (``comment_stay_time_median_nonzero``) to judge the unit by.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from harness.logs.store import Format, write_logs

LOG_COLUMNS: dict[str, str] = {
    "user_id": "BIGINT", "video_id": "BIGINT", "date": "BIGINT", "hourmin": "BIGINT", "time_ms": "BIGINT",
    "is_click": "INTEGER", "is_like": "INTEGER", "is_follow": "INTEGER", "is_comment": "INTEGER",
    "is_forward": "INTEGER", "is_hate": "INTEGER", "long_view": "INTEGER", "play_time_ms": "DOUBLE",
    "duration_ms": "DOUBLE", "profile_stay_time": "DOUBLE", "comment_stay_time": "DOUBLE",
    "is_profile_enter": "INTEGER", "is_rand": "INTEGER", "tab": "INTEGER",
}
REQUIRED_NON_NULL = ("user_id", "video_id", "play_time_ms", "is_rand")  # time: time_ms or date + hourmin
ACTIVITY_LEVELS = {"full_active": "high", "high_active": "high", "middle_active": "medium",
                   "low_active": "low"}
BEIJING_UTC_OFFSET_MS = 8 * 3_600_000  # date/hourmin are Beijing time (UTC+8, no daylight saving)
KUAIRAND_RANDOM_POOL = 7583  # videos in KuaiRand's random-exposure pool (its documentation)
CLIP_RATIO = 10.0  # clip_watch_time caps watch time at this many durations
LACKS = (
    "titles and comment text (null, never invented)",
    "candidate sets (empty table)",
    "comment impressions and comments (empty tables)",
    "logging propensities for standard traffic (null)",
    "a comment-open flag: is_comment means the user wrote a comment; opened_comments = is_comment or "
    "comment_stay_time > 0 (wrote_comment keeps is_comment)",
    "a documented unit for comment_stay_time (read as milliseconds; comment_stay_time_raw keeps the value)",
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
    random_join_window_s: float = 60.0

    def __post_init__(self) -> None:
        if self.slate_size < 1:
            raise ValueError(f"slate_size must be >= 1, got {self.slate_size}")
        if self.session_gap_min <= 0:
            raise ValueError(f"session_gap_min must be > 0, got {self.session_gap_min}")
        if self.random_pool_size is not None and self.random_pool_size < 1:
            raise ValueError(f"random_pool_size must be >= 1 or None, got {self.random_pool_size}")
        if not (math.isfinite(self.random_join_window_s) and self.random_join_window_s >= 0):
            raise ValueError(f"random_join_window_s must be a finite number >= 0, got {self.random_join_window_s}")


@dataclass
class KuaiRandImportSummary:
    """What the import did; `lacks` lists what the format cannot provide or leaves uncertain."""

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
    random_joined: int = 0
    random_unmatched: int = 0
    plays_above_duration: int = 0
    times_from_date_hourmin: int = 0
    hourmin_resolution_min: int = 1
    comment_stay_time_median_nonzero: float | None = None
    time_rule: str = ""
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
        _fail_if(con, "raw", f"{col} IS NULL", f"{col} is empty", "fill or drop these rows")


def _first_raw(con: duckdb.DuckDBPyConnection, where: str, table: str = "raw") -> tuple[int, str, int] | None:
    rows = con.sql(f"SELECT count(*) OVER (), filename, line FROM {table} WHERE {where} "
                   "ORDER BY filename, line LIMIT 1").fetchall()
    if not rows:
        return None
    n, fname, line = rows[0]
    return int(n), Path(fname).name, int(line)


def _fail_if(con: duckdb.DuckDBPyConnection, table: str, where: str, problem: str, fix: str) -> None:
    bad = _first_raw(con, where, table)
    if bad:
        n, fname, line = bad
        raise KuaiRandFormatError(f"{fname} line {line}: {problem} ({n} row(s) in all); {fix}")


def _clock(ms: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).strftime("%Y-%m-%d %H:%M:%S")


def _resolve_times(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """Table `timed` = raw + t_ms (epoch ms: time_ms, else date/hourmin read on the Beijing clock).

    Checks that date and hourmin are valid and agree with time_ms on the Beijing clock (module docstring).
    Returns (hourmin resolution in minutes, rows whose time came from date/hourmin).
    """
    _fail_if(con, "raw", "hourmin IS NOT NULL AND (hourmin < 0 OR hourmin > 2359 OR hourmin % 100 >= 60)",
             "hourmin is not a time of day hhmm (0 to 2359, minutes below 60)", "fix or drop these rows")
    _fail_if(con, "raw", "\"date\" IS NOT NULL AND try_strptime(CAST(\"date\" AS VARCHAR), '%Y%m%d') IS NULL",
             "date is not a yyyymmdd date", "fix or drop these rows")
    _fail_if(con, "raw", "time_ms IS NULL AND (\"date\" IS NULL OR hourmin IS NULL)",
             "time_ms is empty and there is no date/hourmin to take the time from", "fill or drop these rows")
    minute_res, = con.sql("SELECT bool_or(hourmin % 100 <> 0) FROM raw").fetchall()[0]
    res_ms = 60_000 if minute_res else 3_600_000
    off = BEIJING_UTC_OFFSET_MS
    con.execute(f"""
        CREATE TABLE timed AS
        SELECT *, coalesce(time_ms, clock_ms - {off}) AS t_ms
        FROM (SELECT *, epoch_ms(try_strptime(CAST("date" AS VARCHAR), '%Y%m%d'))
                        + (hourmin // 100) * 3600000 + (hourmin % 100) * 60000 AS clock_ms
              FROM raw)""")
    bad = con.sql(f"""
        SELECT count(*) OVER (), filename, line, time_ms, "date", hourmin, clock_ms FROM timed
        WHERE time_ms IS NOT NULL AND clock_ms IS NOT NULL
          AND NOT (time_ms + {off} >= clock_ms AND time_ms + {off} < clock_ms + {res_ms})
        ORDER BY filename, line LIMIT 1""").fetchall()
    if bad:
        n, fname, line, tms, date, hm, clock_ms = bad[0]
        gap_h = (tms + off - clock_ms) / 3_600_000
        unit = "minute" if minute_res else "hour (every hourmin in the files is a whole hour)"
        raise KuaiRandFormatError(
            f"{Path(fname).name} line {line}: time_ms {tms} is {_clock(tms + off)} Beijing time "
            f"({_clock(tms)} UTC) but date/hourmin say {date} {hm:04d} (Beijing), {gap_h:+.2f} h apart "
            f"({n} row(s) in all). KuaiRand's date/hourmin are Beijing time (UTC+8) and time_ms epoch "
            f"milliseconds, so they must agree to the {unit}; a gap of +8 h means date/hourmin were written "
            "in UTC. Fix or drop these rows")
    n_clock, = con.sql("SELECT count(*) FILTER (WHERE time_ms IS NULL) FROM timed").fetchall()[0]
    return (1 if minute_res else 60), int(n_clock)


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


def _assign_requests(con: duckdb.DuckDBPyConnection, config: KuaiRandConfig) -> tuple[int, int]:
    """Table `imp` = `rows` + request key, position, req_ms and request_id (rules in the module docstring).

    Returns (random rows joined to a standard request, random rows kept in random-only requests).
    """
    k = config.slate_size
    window_ms = round(config.random_join_window_s * 1000)
    # a standard request lies within one clock minute M, so one within the window of a random row at
    # minute m has M in [m - reach - 1, m + reach]: an exact equi-join on (user, minute) candidates
    reach = math.ceil(window_ms / 60_000)
    con.execute(f"""
        CREATE TABLE skey AS
        SELECT rid, user_id, tab_k, minute,
               (row_number() OVER (PARTITION BY user_id, tab_k, minute ORDER BY t_ms, filename, line) - 1) // {k}
                   AS chunk, t_ms
        FROM rows WHERE NOT rnd""")
    con.execute("""CREATE TABLE sreq AS SELECT user_id, tab_k, minute, chunk, min(t_ms) AS start_ms,
                                               max(t_ms) AS end_ms FROM skey GROUP BY ALL""")
    dist = "greatest(s.start_ms - c.t_ms, c.t_ms - s.end_ms, 0)"
    con.execute(f"""
        CREATE TABLE rjoin AS
        SELECT rid, tab_k, minute, chunk FROM (
            SELECT c.rid, s.tab_k, s.minute, s.chunk,
                   row_number() OVER (PARTITION BY c.rid ORDER BY s.tab_k <> c.tab_k, {dist}, s.start_ms,
                                                                s.tab_k, s.chunk) AS rk
            FROM (SELECT rid, user_id, tab_k, t_ms, unnest(range(minute - {reach + 1}, minute + {reach + 1})) AS m
                  FROM rows WHERE rnd) c
            JOIN sreq s ON s.user_id = c.user_id AND s.minute = c.m
            WHERE {dist} <= {window_ms})
        WHERE rk = 1""")
    con.execute(f"""
        CREATE TABLE keyed AS
        SELECT r.*, q.kind, q.k_tab, q.k_minute, q.k_chunk
        FROM rows r JOIN (
            SELECT rid, 0 AS kind, tab_k AS k_tab, minute AS k_minute, chunk AS k_chunk FROM skey
            UNION ALL SELECT rid, 0, tab_k, minute, chunk FROM rjoin
            UNION ALL
            SELECT rid, 1, tab_k, minute,
                   (row_number() OVER (PARTITION BY user_id, tab_k, minute ORDER BY t_ms, filename, line) - 1) // {k}
            FROM rows WHERE rnd AND rid NOT IN (SELECT rid FROM rjoin)) q USING (rid)""")
    group = "user_id, kind, k_tab, k_minute, k_chunk"
    con.execute(f"""
        CREATE TABLE imp AS
        SELECT *, dense_rank() OVER (ORDER BY user_id, req_ms, kind, k_tab, k_minute, k_chunk) AS request_id
        FROM (SELECT *, min(t_ms) OVER (PARTITION BY {group}) AS req_ms,
                     row_number() OVER (PARTITION BY {group} ORDER BY t_ms, filename, line) - 1 AS position
              FROM keyed)""")
    joined, unmatched = con.sql("SELECT (SELECT count(*) FROM rjoin), count(*) FILTER (WHERE kind = 1) "
                                "FROM keyed").fetchall()[0]
    return int(joined), int(unmatched)


def build_tables(src: Path, config: KuaiRandConfig) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """Map the KuaiRand files in `src` to schema tables; returns the tables and summary figures."""
    src = Path(src)
    files = find_log_files(src)
    con = duckdb.connect(":memory:")
    try:
        _load_raw(con, files)
        resolution_min, n_clock = _resolve_times(con)
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
        con.execute(f"""
            CREATE TABLE rows AS
            SELECT t.*, v.duration_s AS v_duration_s,
                   v.duration_s > 0 AND t.play_time_ms / 1000 > v.duration_s AS above_duration,
                   v.duration_s > 0 AND t.play_time_ms / 1000 > {CLIP_RATIO} * v.duration_s AS above_clip,
                   coalesce(t.tab, -1) AS tab_k, t.t_ms // 60000 AS minute, t.is_rand = 1 AS rnd,
                   row_number() OVER (ORDER BY t.filename, t.line) AS rid
            FROM timed t JOIN vids v USING (video_id)""")
        if config.random_pool_size is not None:
            n_rand_videos, = con.sql("SELECT count(DISTINCT video_id) FROM raw WHERE is_rand = 1").fetchall()[0]
            if n_rand_videos > config.random_pool_size:
                raise KuaiRandFormatError(f"random_pool_size={config.random_pool_size} is smaller than the "
                                          f"{n_rand_videos} distinct videos seen in random traffic; give the real "
                                          f"pool size (KuaiRand's is {KUAIRAND_RANDOM_POOL})")
        joined, unmatched = _assign_requests(con, config)
        gap_ms = int(config.session_gap_min * 60_000)
        requests = con.sql(f"""
            SELECT request_id, user_id, epoch_ms(req_ms + {BEIJING_UTC_OFFSET_MS}) AS ts,
                   CAST(sum(new_session) OVER (ORDER BY user_id, request_id ROWS UNBOUNDED PRECEDING) AS BIGINT)
                       AS session_id
            FROM (SELECT request_id, user_id, req_ms,
                         CASE WHEN req_ms - lag(req_ms) OVER (PARTITION BY user_id ORDER BY request_id) <= {gap_ms}
                              THEN 0 ELSE 1 END AS new_session
                  FROM (SELECT DISTINCT request_id, user_id, req_ms FROM imp))
            ORDER BY request_id""").to_arrow_table()
        prop = "NULL::DOUBLE" if config.random_pool_size is None else f"{1.0 / config.random_pool_size!r}"
        watch = "play_time_ms / 1000"
        if config.clip_watch_time:
            watch = f"CASE WHEN above_clip THEN {CLIP_RATIO} * v_duration_s ELSE {watch} END"
        impressions = con.sql(f"""
            SELECT request_id, video_id, CAST(position AS INTEGER) AS position,
                   CASE WHEN rnd THEN {prop} ELSE NULL END AS propensity,
                   rnd AS is_random, {watch} AS watch_time_s,
                   coalesce(is_like, 0) = 1 AS liked,
                   coalesce(is_comment, 0) = 1 OR coalesce(comment_stay_time, 0) > 0 AS opened_comments,
                   coalesce(comment_stay_time, 0) / 1000 AS comment_watch_time_s,
                   coalesce(is_comment, 0) = 1 AS wrote_comment, comment_stay_time AS comment_stay_time_raw,
                   t_ms AS time_ms, is_click, long_view, is_follow, is_forward, is_hate, is_profile_enter,
                   profile_stay_time / 1000 AS profile_stay_time_s, tab, duration_ms / 1000 AS log_duration_s
            FROM imp ORDER BY request_id, position""").to_arrow_table()
        users = con.sql("""SELECT u.user_id, f.activity_level, CAST(NULL AS VARCHAR) AS comment_level,
                                  CAST(NULL AS INTEGER) AS signup_day
                           FROM (SELECT DISTINCT user_id FROM raw) u LEFT JOIN ufeat f USING (user_id)
                           ORDER BY u.user_id""").to_arrow_table()
        videos = con.sql("SELECT * FROM vids ORDER BY video_id").to_arrow_table()
        rows, n_rand, n_above, n_clip, stay_median = con.sql("""
            SELECT count(*), count(*) FILTER (WHERE rnd), count(*) FILTER (WHERE above_duration),
                   count(*) FILTER (WHERE above_clip), median(comment_stay_time) FILTER (WHERE comment_stay_time > 0)
            FROM rows""").fetchall()[0]
        unknown_dur, = con.sql("SELECT count(*) FROM vids WHERE duration_s = 0").fetchall()[0]
    finally:
        con.close()
    figures = {"log_files": [f.name for f in files], "rows": int(rows), "random_impressions": int(n_rand),
               "videos_with_unknown_duration": int(unknown_dur),
               "clipped_watch_times": int(n_clip) if config.clip_watch_time else 0,
               "plays_above_duration": int(n_above), "random_joined": joined, "random_unmatched": unmatched,
               "times_from_date_hourmin": n_clock, "hourmin_resolution_min": resolution_min,
               "comment_stay_time_median_nonzero": None if stay_median is None else float(stay_median)}
    return {"users": users, "videos": videos, "requests": requests, "impressions": impressions}, figures


def import_kuairand(src: Path, out: Path, *, fmt: Format = "parquet", config: KuaiRandConfig | None = None,
                    overwrite: bool = False) -> KuaiRandImportSummary:
    """Import the KuaiRand files in `src` into validated logs at `out` (nothing written on any error)."""
    config = config or KuaiRandConfig()
    tables, fig = build_tables(src, config)
    write_logs(tables, Path(out), fmt=fmt, overwrite=overwrite)
    pool = config.random_pool_size
    res = "minute" if fig["hourmin_resolution_min"] == 1 else "hour"
    return KuaiRandImportSummary(
        out=str(out), log_files=fig["log_files"], rows=fig["rows"], users=tables["users"].num_rows,
        videos=tables["videos"].num_rows, requests=tables["requests"].num_rows,
        impressions=tables["impressions"].num_rows, random_impressions=fig["random_impressions"],
        videos_with_unknown_duration=fig["videos_with_unknown_duration"],
        clipped_watch_times=fig["clipped_watch_times"],
        request_rule=(f"a user's standard rows in one tab and clock minute, in chunks of at most {config.slate_size}; "
                      f"each random row joins its user's nearest such request within "
                      f"{config.random_join_window_s:g} s, same tab first ({fig['random_joined']} joined, "
                      f"{fig['random_unmatched']} with no feed near kept in random-only requests); "
                      f"new session after {config.session_gap_min:g} min idle"),
        propensity_rule=(f"1/{pool} on random traffic (uniform pool of {pool} videos); null on standard traffic"
                         if pool else "null everywhere (random pool size not given; standard policy unknown; "
                                      f"KuaiRand's pool is {KUAIRAND_RANDOM_POOL} videos)"),
        random_joined=fig["random_joined"], random_unmatched=fig["random_unmatched"],
        plays_above_duration=fig["plays_above_duration"], times_from_date_hourmin=fig["times_from_date_hourmin"],
        hourmin_resolution_min=fig["hourmin_resolution_min"],
        comment_stay_time_median_nonzero=fig["comment_stay_time_median_nonzero"],
        time_rule=(f"ts = time_ms on the Beijing clock (UTC+8, naive timestamp; UTC = ts - 8 h), checked against "
                   f"date/hourmin to the {res}; {fig['times_from_date_hourmin']} row(s) without time_ms took "
                   "their date/hourmin"),
    )
