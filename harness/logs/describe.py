"""Describe logged sessions: sizes, rates and what the data lacks, in one DuckDB pass per table.

The rates are the ones the synthetic world is calibrated on (docs/architecture.md: KuaiComt has comment-section
opens on about 13% of impressions and comment likes/replies on about 6% of opens), so `harness logs
describe` shows at a glance whether a dataset exercises the harness at realistic rates.

Definitions (all over the whole dataset):
  random_share             = #impressions with is_random / #impressions
  comment_open_rate        = #impressions with opened_comments / #impressions
  comment_interaction_rate = (#comment_impressions liked + #replied) / #impressions with opened_comments
                             (None when there are no comment impressions: the data cannot tell)
  like_rate                = #impressions liked / #impressions
  watch_time quantiles     = linear-interpolation quantiles of impressions.watch_time_s
                             (DuckDB quantile_cont, same as numpy's default percentile)
  requests_per_user        = #requests / #distinct user_id in requests
  slate_size               = impressions per request (mean, min, max)
  candidates_per_request   = #candidates / #requests (None without candidate sets)
  impressions_per_user_day = #impressions / #(user, calendar day) pairs with a request
  requests_per_session     = #requests / #distinct session_id
  comment_time_share       = sum comment_watch_time_s / (sum watch_time_s + sum comment_watch_time_s)
  plays_over_duration      = #impressions with watch_time_s > duration_s / #impressions with watch_time_s > 0

`TARGETS` holds, for the calibrated rates, the published figure and its source: `harness logs describe`
prints them beside the measured values (see docs/synthetic-world.md for how the world meets them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from harness.logs.store import LogStore


@dataclass(frozen=True)
class Target:
    """A published figure a rate is calibrated to, and where it comes from."""

    value: float
    source: str


TARGETS: dict[str, Target] = {
    "random_share": Target(0.0037, "KuaiRand: random exposure ~0.37% of impressions, single slots"),
    "comment_open_rate": Target(0.13, "KuaiComt: 16.0M comment-section opens / 119.7M impressions"),
    "comment_interaction_rate": Target(0.06, "KuaiComt: 1.0M comment likes+replies / 16.0M opens"),
    "comment_time_share": Target(0.058, "Kuaishou: ~7 of ~120 minutes a day in comments"),
    "impressions_per_user_day": Target(99.0, "KuaiComt: ~99 impressions per active user-day "
                                             "(KuaiRand-1K: ~378)"),
}


@dataclass(frozen=True)
class LogDescription:
    """Stable field names: the CLI table and `--json` both read these."""

    path: str
    format: str
    fingerprint: str
    fingerprint_without_floats: str  # the same on every CPU (docs/synthetic-world.md)
    counts: dict[str, int]
    users: int
    active_users: int
    videos: int
    requests: int
    impressions: int
    ts_min: str | None
    ts_max: str | None
    days: float | None
    random_share: float | None
    comment_open_rate: float | None
    comment_interaction_rate: float | None
    like_rate: float | None
    watch_time_mean: float | None
    watch_time_p10: float | None
    watch_time_p50: float | None
    watch_time_p90: float | None
    watch_time_p99: float | None
    comment_watch_time_per_open: float | None
    requests_per_user: float | None
    slate_size_mean: float | None
    slate_size_min: int | None
    slate_size_max: int | None
    candidates_per_request: float | None
    propensity_coverage: float | None
    zero_duration_videos: int
    absent: list[str] = field(default_factory=list)
    impressions_per_user_day: float | None = None
    requests_per_session: float | None = None
    comment_time_share: float | None = None
    plays_over_duration: float | None = None
    targets: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: asdict(t) for k, t in TARGETS.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or not den:
        return None
    return float(num) / float(den)


def _one(store: LogStore, sql: str) -> tuple[Any, ...]:
    return store.con.sql(sql).fetchall()[0]


def describe(store: LogStore) -> LogDescription:
    """Compute the description of the logs behind `store` (see the module docstring for definitions)."""
    counts = store.counts()
    n_imp = counts["impressions"]
    n_req = counts["requests"]
    active_users, ts_min, ts_max = _one(store, "SELECT count(DISTINCT user_id), min(ts), max(ts) FROM requests")
    (n_random, n_open, n_liked, w_mean, p10, p50, p90, p99, cw_open, n_prop, n_prop_rand,
     n_prop_std) = _one(store, """
        SELECT count(*) FILTER (WHERE is_random), count(*) FILTER (WHERE opened_comments),
               count(*) FILTER (WHERE liked), avg(watch_time_s),
               quantile_cont(watch_time_s, 0.10), quantile_cont(watch_time_s, 0.50),
               quantile_cont(watch_time_s, 0.90), quantile_cont(watch_time_s, 0.99),
               sum(comment_watch_time_s) FILTER (WHERE opened_comments),
               count(propensity), count(propensity) FILTER (WHERE is_random),
               count(propensity) FILTER (WHERE NOT is_random)
        FROM impressions""")
    slate_mean, slate_min, slate_max = _one(store, """
        SELECT avg(n), min(n), max(n) FROM (SELECT count(*) AS n FROM impressions GROUP BY request_id)""")
    n_ci = counts["comment_impressions"]
    ci_likes, ci_replies = _one(store, "SELECT count(*) FILTER (WHERE liked), count(*) FILTER (WHERE replied) "
                                       "FROM comment_impressions")
    n_titles, = _one(store, "SELECT count(title) FROM videos")
    n_text, = _one(store, "SELECT count(text) FROM comments")
    n_activity, = _one(store, "SELECT count(activity_level) FROM users")
    zero_dur, = _one(store, "SELECT count(*) FROM videos WHERE duration_s = 0")
    n_sessions, user_days = _one(store, "SELECT count(DISTINCT session_id), count(DISTINCT (user_id, CAST(ts AS DATE))) "
                                        "FROM requests")
    w_sum, cw_sum, n_over, n_played = _one(store, """
        SELECT sum(i.watch_time_s), sum(i.comment_watch_time_s),
               count(*) FILTER (WHERE v.duration_s > 0 AND i.watch_time_s > v.duration_s),
               count(*) FILTER (WHERE v.duration_s > 0 AND i.watch_time_s > 0)
        FROM impressions i JOIN videos v USING (video_id)""")

    absent: list[str] = []
    if counts["videos"] and n_titles == 0:
        absent.append("no video titles (text)")
    if counts["comments"] == 0:
        absent.append("no comments table")
    elif n_text == 0:
        absent.append("no comment text")
    if n_req and counts["candidates"] == 0:
        absent.append("no candidate sets")
    if n_imp and n_ci == 0:
        absent.append("no comment impressions (comment-level metrics cannot be replayed)")
    if n_imp and n_prop == 0:
        absent.append("no logging propensities")
    elif n_imp and n_prop_std == 0 and n_prop_rand > 0:
        absent.append("propensities only on random traffic")
    elif n_imp and n_prop < n_imp:
        absent.append(f"propensities missing on {n_imp - n_prop} of {n_imp} impressions")
    if n_imp and n_random == 0:
        absent.append("no random-exposure traffic")
    if counts["users"] and n_activity == 0:
        absent.append("no user activity levels")
    if zero_dur:
        absent.append(f"{zero_dur} video(s) with unknown (zero) duration")

    days = (ts_max - ts_min).total_seconds() / 86400 if ts_min is not None else None
    return LogDescription(
        path=str(store.path), format=store.format, fingerprint=store.fingerprint(),
        fingerprint_without_floats=store.fingerprint(floats=False), counts=counts,
        users=counts["users"], active_users=int(active_users), videos=counts["videos"], requests=n_req,
        impressions=n_imp,
        ts_min=ts_min.isoformat() if ts_min is not None else None,
        ts_max=ts_max.isoformat() if ts_max is not None else None, days=days,
        random_share=_ratio(n_random, n_imp), comment_open_rate=_ratio(n_open, n_imp),
        comment_interaction_rate=_ratio(ci_likes + ci_replies, n_open) if n_ci else None,
        like_rate=_ratio(n_liked, n_imp),
        watch_time_mean=w_mean, watch_time_p10=p10, watch_time_p50=p50, watch_time_p90=p90,
        watch_time_p99=p99, comment_watch_time_per_open=_ratio(cw_open, n_open),
        requests_per_user=_ratio(n_req, active_users),
        slate_size_mean=float(slate_mean) if slate_mean is not None else None,
        slate_size_min=slate_min, slate_size_max=slate_max,
        candidates_per_request=_ratio(counts["candidates"], n_req) if counts["candidates"] else None,
        propensity_coverage=_ratio(n_prop, n_imp), zero_duration_videos=int(zero_dur), absent=absent,
        impressions_per_user_day=_ratio(n_imp, user_days),
        requests_per_session=_ratio(n_req, n_sessions),
        comment_time_share=_ratio(cw_sum, (w_sum or 0) + (cw_sum or 0)) if w_sum is not None else None,
        plays_over_duration=_ratio(n_over, n_played),
    )
