"""Configuration dataclasses for LSVCR (the method: docs/lsvcr-method.md).

Three configs, one per part, each validated in `__post_init__`:

- `SRConfig`: the sequential recommender kept in deployment (hidden 64, 2 layers, 2 heads, FFN 256,
  dropout 0.3, GELU, post-LN, max position 50, cosine / 0.07 scoring).
- `Stage1Config`: personalised preference alignment with the language model (the LLM recommender).
- `Stage2Config`: recommendation-oriented fine-tuning of the SR model with ID embeddings and the gate.

All configs round-trip through plain dicts (`asdict` / `from_dict`) so they live in `config.json`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

ABLATIONS = (None, "no_align", "no_comments", "no_text")
LM_TUNINGS = ("top", "lora", "full", "frozen")
Ablation = Literal["no_align", "no_comments", "no_text"] | None


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    _check(not unknown, f"{cls.__name__}: unknown keys {unknown} (known: {sorted(names)})")
    return cls(**data)


@dataclass
class SRConfig:
    """The SR model. `n_videos` = 0 means no ID table (stage 1); `lm_dim` is the LM's hidden size."""

    lm_dim: int = 384
    text_dim: int = 256
    hidden: int = 64
    n_layers: int = 2
    n_heads: int = 2
    ffn: int = 256
    dropout: float = 0.3
    max_len: int = 50
    temperature: float = 0.07
    n_videos: int = 0
    n_comments: int = 0
    use_ids: bool = False
    use_text: bool = True
    use_comments: bool = True
    # A learned like-count prior on comment logits (sr_model.py, LIKE_BUCKETS). Not in the method's (docs/lsvcr-method.md)
    # comment tower (text only); on by default because comment exposure, and so engagement, follows
    # like count (bench/oracle_ceiling.py: exposure alone is most of the comment task's signal).
    comment_prior: bool = True
    # A serving export (models/lsvcr/export.py): the text tables already hold the item vectors A t(e)
    # (hidden-d), so the text MLP and the adapter are identities. Scores equal the trained model's up to
    # the float16 storage of those vectors; such a checkpoint serves, it is not trained further.
    text_projected: bool = False

    def __post_init__(self) -> None:
        for name in ("lm_dim", "text_dim", "hidden", "n_layers", "n_heads", "ffn"):
            _check(getattr(self, name) >= 1, f"SRConfig.{name} must be >= 1, got {getattr(self, name)}")
        _check(self.hidden % self.n_heads == 0,
               f"SRConfig.hidden ({self.hidden}) must be divisible by n_heads ({self.n_heads})")
        _check(0.0 <= self.dropout < 1.0, f"SRConfig.dropout must be in [0, 1), got {self.dropout}")
        _check(self.max_len >= 2 and self.max_len % 2 == 0,
               f"SRConfig.max_len must be an even number >= 2 (windows of stride max_len/2), got {self.max_len}")
        _check(self.temperature > 0, f"SRConfig.temperature must be > 0, got {self.temperature}")
        _check(self.n_videos >= 0 and self.n_comments >= 0, "SRConfig.n_videos / n_comments must be >= 0")
        _check(not self.use_ids or self.n_videos >= 1, "SRConfig.use_ids needs n_videos >= 1")
        _check(self.use_text or self.use_ids, "SRConfig: a model without text needs IDs (use_ids=True)")
        _check(self.use_text or self.n_comments >= 1,
               "SRConfig: without text, comments need an ID table (n_comments >= 1)")
        _check(not self.text_projected or self.lm_dim == self.hidden,
               f"SRConfig.text_projected needs lm_dim == hidden ({self.hidden}), got {self.lm_dim}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SRConfig:
        # config.json files written before the like-count prior existed describe models without it
        return _from_dict(cls, {"comment_prior": False, **data})


@dataclass
class Stage1Config:
    """Stage 1 (alignment). Defaults fit the 10-minute CPU budget on the default synthetic world.

    `lm_tuning`: "top" trains the top `top_layers` transformer blocks of the LM, "lora" adds LoRA
    (r, alpha, dropout as in the paper: 8, 32, 0.1), "full" trains everything, "frozen" nothing.
    Samples (prompts.py): the last `n_video_items` videos and `n_comment_items` comment records before
    the target, seen by the SR model; the prompt lists the last `prompt_video_items` /
    `prompt_comment_items` of them (the paper: 20 and 20) and fits `max_prompt_tokens` by cutting every
    text to its first W <= `words_per_text` words. Augmentation: `swap_p` per history, then
    `swap_item_p` per item. `item_grad`: the batch's item texts are embedded inside the graph, at most
    `item_grad_max_texts` distinct texts a step (0 = no limit; batch_text.py), so the SR-side losses
    reach the LM through them.
    `max_seconds` caps stage 1's optimisation steps (the final re-embedding comes on top); under a
    whole-pipeline budget (`train_lsvcr(time_budget_s=...)`) it is set to `budget_share` of what the
    budget has left after the pre-trained embedding pass, so a cold cache shortens stage 1 instead of
    overrunning the budget.
    """

    n_samples: int = 2000
    comment_share: float = 0.5
    batch_size: int = 32
    epochs: int = 1
    lr_lm: float = 5e-5
    lr: float = 1e-3
    weight_decay: float = 1e-5
    max_prompt_tokens: int = 128
    max_response_tokens: int = 24
    n_video_items: int = 20
    n_comment_items: int = 20
    prompt_video_items: int = 20
    prompt_comment_items: int = 20
    words_per_text: int = 8
    swap_p: float = 0.5
    swap_item_p: float = 0.3
    item_grad: bool = True
    item_grad_max_texts: int = 256
    lm_tuning: str = "top"
    top_layers: int = 2
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    w_lm: float = 1.0
    w_rec: float = 1.0
    w_align: float = 0.5
    text_max_tokens: int = 32
    embed_batch: int = 128
    grad_clip: float = 1.0
    max_seconds: float | None = None
    budget_share: float = 0.4

    def __post_init__(self) -> None:
        _check(self.max_seconds is None or self.max_seconds > 0, "Stage1Config.max_seconds must be > 0 or None")
        _check(0.0 < self.budget_share < 1.0, "Stage1Config.budget_share must be in (0, 1)")
        _check(self.n_samples >= 2, f"Stage1Config.n_samples must be >= 2, got {self.n_samples}")
        _check(0.0 <= self.comment_share <= 1.0, "Stage1Config.comment_share must be in [0, 1]")
        _check(self.batch_size >= 2, "Stage1Config.batch_size must be >= 2 (in-batch negatives)")
        _check(self.epochs >= 1, "Stage1Config.epochs must be >= 1")
        _check(self.lm_tuning in LM_TUNINGS,
               f"Stage1Config.lm_tuning must be one of {LM_TUNINGS}, got {self.lm_tuning!r}")
        _check(self.top_layers >= 1, "Stage1Config.top_layers must be >= 1")
        _check(0.0 <= self.swap_p <= 1.0 and 0.0 <= self.swap_item_p <= 1.0,
               "Stage1Config.swap_p and swap_item_p must be in [0, 1]")
        _check(self.max_prompt_tokens >= 16, "Stage1Config.max_prompt_tokens must be >= 16")
        _check(self.n_video_items >= 1 and self.n_comment_items >= 0, "Stage1Config: item counts")
        _check(self.prompt_video_items >= 0 and self.prompt_comment_items >= 0, "Stage1Config: prompt item counts")
        _check(self.words_per_text >= 1, "Stage1Config.words_per_text must be >= 1")
        _check(self.item_grad_max_texts >= 0, "Stage1Config.item_grad_max_texts must be >= 0 (0 = no limit)")
        _check(self.text_max_tokens >= 4 and self.embed_batch >= 1, "Stage1Config: text embedding sizes")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stage1Config:
        # config.json files written before 2026-12-01 describe runs that swapped whole histories and read
        # the item texts from the per-epoch tables only (their random item draw has no field)
        return _from_dict(cls, {"swap_item_p": 1.0, "item_grad": False, **data})


STAGE2_TASKS = ("both", "video", "comment")


@dataclass
class Stage2Config:
    """Stage 2 (fine-tuning). `batch_users` users per step; each contributes all its queries.

    The paper's batch of 512 samples corresponds to a few users' worth of (query, target) pairs here,
    since one causal pass per user yields a training query at every history event. `task`: "both" (the
    default: one joint model) or "video" / "comment", one model per task as the paper trains them: the
    other task's loss is left out and the epoch is chosen on this task's validation NDCG@5 alone.
    """

    epochs: int = 50
    patience: int = 5
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_users: int = 32
    segment_len: int = 100
    n_comment_neg: int = 19
    w_comment: float = 1.0
    w_idtext: float = 0.1
    grad_clip: float = 1.0
    max_seconds: float | None = None
    task: str = "both"

    def __post_init__(self) -> None:
        _check(self.task in STAGE2_TASKS, f"Stage2Config.task must be one of {STAGE2_TASKS}, got {self.task!r}")
        _check(self.epochs >= 1, f"Stage2Config.epochs must be >= 1, got {self.epochs}")
        _check(self.patience >= 1, "Stage2Config.patience must be >= 1")
        _check(self.lr > 0 and self.weight_decay >= 0, "Stage2Config: lr > 0 and weight_decay >= 0")
        _check(self.batch_users >= 1, "Stage2Config.batch_users must be >= 1")
        _check(self.segment_len >= 1, "Stage2Config.segment_len must be >= 1")
        _check(self.n_comment_neg >= 1, "Stage2Config.n_comment_neg must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stage2Config:
        return _from_dict(cls, data)


@dataclass
class LSVCRConfig:
    """Everything a training run needs; saved in the checkpoint's config.json."""

    sr: SRConfig = field(default_factory=SRConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    llm_path: str | None = None
    ablation: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.ablation in ABLATIONS,
               f"LSVCRConfig.ablation must be one of {ABLATIONS}, got {self.ablation!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"sr": self.sr.to_dict(), "stage1": self.stage1.to_dict(), "stage2": self.stage2.to_dict(),
                "llm_path": self.llm_path, "ablation": self.ablation, "seed": self.seed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LSVCRConfig:
        d = dict(data)
        return cls(sr=SRConfig.from_dict(d.pop("sr", {})), stage1=Stage1Config.from_dict(d.pop("stage1", {})),
                   stage2=Stage2Config.from_dict(d.pop("stage2", {})), **d)
