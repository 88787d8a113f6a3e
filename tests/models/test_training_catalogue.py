"""Logs cut before later uploads (`harness train --until`): the videos published after the data's last request
are no training or validation negatives (`Splits.available`), for `base` and LSVCR stage 2 alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from models.batch import visible_count
from models.evaluation import EvalConfig, candidates_key, sample_candidates
from models.histories import prepare_data
from models.lsvcr.config import Stage2Config
from models.lsvcr.stage2 import stage2_batch_losses
from models.sasrec import SASRec, SASRecConfig
from models.train_sasrec import TrainConfig, train_sasrec
from tests.models.fixtures import T0
from tests.models.test_lsvcr_model import V
from tests.models.test_lsvcr_stage2 import stage2_batch
from tests.models.test_split_leaks import hand_logs

# videos 1-4 engaged, 5-6 published before the last request (70 s) but never engaged, 7-9 published later
PUBLISHED = {1: -1000, 2: -1000, 3: -1000, 4: -1000, 5: 50, 6: 60, 7: 500, 8: 600, 9: 700}


def cut_logs(published: bool = True) -> dict[str, pd.DataFrame]:
    """Three users engaging videos 1, 2, 3, 4, 1, 2, 3, 4 at t = 0, 10, ..., 70 (what `--until` keeps), with
    a videos table that also lists the uploads after the cut, as the log store's videos table does."""
    ev = [(u, 10 * k, 1 + (k + u) % 4, 15.0, []) for u in (1, 2, 3) for k in range(8)]
    logs = hand_logs(ev)
    videos = pd.DataFrame({"video_id": np.arange(1, 10), "title": [f"v{i}" for i in range(1, 10)],
                           "duration_s": 15.0})
    if published:
        videos["published_at"] = [T0 + pd.Timedelta(seconds=PUBLISHED[v]) for v in range(1, 10)]
    logs["videos"] = videos
    return logs


def test_available_videos_are_those_published_by_the_last_request() -> None:
    prep = prepare_data(cut_logs())
    assert prep.splits.available.tolist() == [False] + [PUBLISHED[v] <= 70 for v in range(1, 10)]
    # only a known upload time counts: without published_at every video is available, as before
    assert prepare_data(cut_logs(published=False)).splits.available is None
    # every video published by the end (the whole default world): None, and nothing changes
    logs = cut_logs()
    logs["videos"] = logs["videos"][logs["videos"]["video_id"] <= 6]
    assert prepare_data(logs).splits.available is None


def test_validation_negatives_are_published_and_the_key_says_so() -> None:
    prep = prepare_data(cut_logs())
    cands = sample_candidates(prep.splits, prep.catalogue)
    drawn = {v for row in cands.table.itertuples() if row.task == "video" for v in row.candidates}
    assert drawn and drawn <= {1, 2, 3, 4, 5, 6}  # the user's unseen published videos: 5 and 6
    assert {5, 6} <= drawn
    everything = prepare_data(cut_logs())
    everything.splits.available = None
    cfg = EvalConfig()
    assert candidates_key(prep.splits, prep.catalogue, cfg) != candidates_key(everything.splits, everything.catalogue,
                                                                              cfg)


def test_base_never_trains_against_a_later_upload(tmp_path) -> None:
    """The rows of the videos published after the data's end stay exactly as initialised; the others move."""
    prep = prepare_data(cut_logs())
    cands = sample_candidates(prep.splits, prep.catalogue)
    res = train_sasrec(prep.splits, prep.catalogue, cands, config=TrainConfig(epochs=2, seed=3, progress=False),
                       log=lambda s: None)
    torch.manual_seed(3)
    init = SASRec(SASRecConfig(n_items=prep.catalogue.n_videos)).item_emb.weight.detach()
    trained = res.recommender.model.item_emb.weight.detach()
    later = torch.tensor([7, 8, 9])
    torch.testing.assert_close(trained[later], init[later], rtol=0, atol=0)
    assert not torch.equal(trained[torch.tensor([5, 6])], init[torch.tensor([5, 6])])  # published: negatives


def test_lsvcr_stage2_video_loss_leaves_later_uploads_out() -> None:
    """The masked loss is the cross-entropy over the available columns only."""
    model, hist, cands, known = stage2_batch()
    targets = set(hist.video_ids.flatten().tolist()) - {0}
    unavailable = torch.zeros(V + 1, dtype=torch.bool)
    later = [v for v in range(1, V + 1) if v not in targets][:3]
    assert later, "the fixture should leave some videos out of the histories"
    unavailable[later] = True
    seen: list[torch.Tensor] = []
    score_all = model.score_all_videos
    model.score_all_videos = lambda u: seen.append(score_all(u)) or seen[-1]  # type: ignore[method-assign]
    out = stage2_batch_losses(model, hist, cands, Stage2Config(), np.random.default_rng(1), known,
                              unavailable=unavailable)
    plain = stage2_batch_losses(model, hist, cands, Stage2Config(), np.random.default_rng(1), known)
    logits = seen[0].detach()
    keep = ~unavailable
    ok = (hist.video_ids > 0) & (visible_count(hist.video_time, hist.video_time) >= 1)  # the loss's targets
    remap = torch.cumsum(keep.long(), 0) - 1  # column of each kept video in logits[:, keep]
    want = F.cross_entropy(logits[:, keep], remap[hist.video_ids[ok]])
    torch.testing.assert_close(out["video"].detach(), want)
    assert float(out["video"].detach()) < float(plain["video"].detach())  # fewer negatives, lower loss
