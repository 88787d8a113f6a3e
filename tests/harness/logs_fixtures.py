"""A small, valid, hand-checkable log dataset; every bad case in the tests is one mutation of it.

3 users, 6 videos (durations 10, 20, 30, 15, 60, 5 s), 4 comments, 6 requests (user 1: 3, user 2: 2,
user 3: 1), 12 impressions (slate size 2; request 6 is random traffic), 18 candidates (3 per request),
4 comment impressions (likes on rows 0 and 3, a reply on row 0). WATCH, LIKED, OPENED, COMMENT_WATCH
are the impressions' columns in row order, for hand computations in the tests.
"""

from __future__ import annotations

import pandas as pd

WATCH = [5.0, 12.0, 30.0, 0.0, 8.0, 15.0, 2.0, 40.0, 60.0, 3.0, 1.0, 20.0]
LIKED = [True, False, True, False, False, False, False, True, False, False, False, False]
OPENED = [True, False, False, False, True, False, False, False, True, False, False, False]
COMMENT_WATCH = [10.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 6.0, 0.0, 0.0, 0.0]


def valid_tables() -> dict[str, pd.DataFrame]:
    """Fresh DataFrames for all seven tables (callers mutate them freely)."""
    users = pd.DataFrame({
        "user_id": [1, 2, 3],
        "activity_level": ["high", "medium", "low"],
        "comment_level": ["frequent", "rare", None],
        "signup_day": pd.array([-30, -5, None], dtype="Int32"),
    })
    videos = pd.DataFrame({
        "video_id": [10, 11, 12, 13, 14, 15],
        "title": ["cats", "dogs", "news", None, "cooking", "music"],
        "duration_s": [10.0, 20.0, 30.0, 15.0, 60.0, 5.0],
        "author_id": pd.array([7, 7, 8, 9, None, 9], dtype="Int64"),
    })
    comments = pd.DataFrame({
        "comment_id": [100, 101, 102, 103],
        "video_id": [10, 10, 12, 14],
        "text": ["lol", "so cute", "interesting", "yum"],
        "like_count": [5, 0, 2, 1],
    })
    requests = pd.DataFrame({
        "request_id": [1, 2, 3, 4, 5, 6],
        "user_id": [1, 1, 1, 2, 2, 3],
        "ts": pd.to_datetime(["2024-01-01 00:00", "2024-01-01 00:05", "2024-01-02 10:00",
                              "2024-01-01 08:00", "2024-01-03 12:00", "2024-01-02 09:30"]),
        "session_id": [1, 1, 2, 3, 4, 5],
    })
    rid = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    impressions = pd.DataFrame({
        "request_id": rid,
        "video_id": [10, 11, 12, 13, 14, 15, 10, 12, 14, 11, 13, 15],
        "position": [0, 1] * 6,
        "propensity": [0.5, 0.4, 0.6, 0.3, 0.5, 0.5, 0.7, 0.2, 0.9, 0.1, 1 / 6, 1 / 6],
        "is_random": [False] * 10 + [True, True],
        "watch_time_s": WATCH,
        "liked": LIKED,
        "opened_comments": OPENED,
        "comment_watch_time_s": COMMENT_WATCH,
    })
    candidates = pd.DataFrame({
        "request_id": [r for r in range(1, 7) for _ in range(3)],
        "video_id": [10, 11, 12, 12, 13, 14, 14, 15, 10, 10, 12, 13, 14, 11, 15, 13, 15, 10],
    })
    comment_impressions = pd.DataFrame({
        "request_id": [1, 1, 3, 5],
        "video_id": [10, 10, 14, 14],
        "comment_id": [100, 101, 103, 103],
        "position": [0, 1, 0, 0],
        "propensity": [0.8, 0.2, 1.0, 1.0],
        "dwell_s": [6.0, 4.0, 4.0, 6.0],
        "liked": [True, False, False, True],
        "replied": [True, False, False, False],
    })
    return {
        "users": users, "videos": videos, "comments": comments, "requests": requests,
        "impressions": impressions, "candidates": candidates, "comment_impressions": comment_impressions,
    }
