"""SASRec (Kang & McAuley, ICDM 2018): the production baseline `base`, over video IDs only.

Self-attentive sequential recommendation: item embedding + learned position embedding ->
LayerNorm -> dropout -> a causal Transformer encoder (post-LN, GELU, as RecBole's SASRec) ->
the state at the last visible event is the user vector h; the score of item i is h . e_i with the
item table shared between input and output. Trained with full-softmax cross-entropy over all V
videos (no sampling): L = -log softmax(h E^T)[target].

Hyperparameters follow the SR model of docs/lsvcr-method.md: hidden 64, 2 layers, 2 heads, FFN 256, dropout 0.3,
max position 50. Initialisation follows RecBole (normal(0, 0.02), LayerNorm eps 1e-12); the pad row
(index 0) is zero and never trained.

Long histories and many queries per user, in one causal pass (the models' data contract): the
history is cut into windows of `max_len` events with stride s = max_len // 2 (window w covers events
[s*w, s*w + max_len), positions 0..max_len-1 inside each). A query whose last visible event is event
i (i = number of events with time < query time, minus 1) reads the state at i from window 0 when
i < max_len, else from window w = i // s - 1, where i falls in the second half, so every query sees
between s+1 and max_len events of context. Training reads its targets through the same rule, so
training and scoring see identical contexts. Only the causal mask is applied: padding sits at the
end of a window, so no valid position can attend to it.

Unknown videos: a video not in the checkpoint's catalogue maps to index 0 and is scored -inf, i.e.
ranked below every known video (exactly like padding). A user with no visible history gets the
zero user vector, so every candidate scores 0 (a tie, which the pessimistic metrics count as a
miss).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from models.batch import score_live, visible_count


@dataclass
class SASRecConfig:
    n_items: int  # V (catalogue videos); the table has V + 1 rows, row 0 = padding
    hidden: int = 64
    n_layers: int = 2
    n_heads: int = 2
    ffn: int = 256
    dropout: float = 0.3
    max_len: int = 50

    def __post_init__(self) -> None:
        if self.n_items < 1:
            raise ValueError(f"SASRecConfig.n_items must be >= 1, got {self.n_items}")
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_len < 2:
            raise ValueError(f"max_len must be >= 2, got {self.max_len}")
        for k in ("hidden", "n_layers", "n_heads", "ffn"):
            if getattr(self, k) < 1:
                raise ValueError(f"SASRecConfig.{k} must be >= 1")

    @property
    def stride(self) -> int:
        return self.max_len // 2

    def to_dict(self) -> dict:
        return asdict(self)


def n_windows(n: Tensor | int, max_len: int) -> Tensor | int:
    """Windows needed to cover n events: 1 if n <= max_len else (n - 1) // stride."""
    s = max_len // 2
    if isinstance(n, Tensor):
        return torch.where(n <= max_len, torch.ones_like(n), (n - 1) // s)
    return 1 if n <= max_len else (n - 1) // s


def reading_window(i: Tensor, max_len: int) -> Tensor:
    """Window from which the state at event index i is read (see the module docstring)."""
    s = max_len // 2
    return torch.where(i < max_len, torch.zeros_like(i), i // s - 1)


class SASRec(nn.Module):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.config = c = config
        self.item_emb = nn.Embedding(c.n_items + 1, c.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(c.max_len, c.hidden)
        self.norm = nn.LayerNorm(c.hidden, eps=1e-12)
        self.drop = nn.Dropout(c.dropout)
        layer = nn.TransformerEncoderLayer(
            c.hidden, c.n_heads, c.ffn, c.dropout, activation="gelu", batch_first=True, norm_first=False,
            layer_norm_eps=1e-12,
        )
        self.encoder = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self.apply(self._init)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def encode(self, seq: Tensor) -> Tensor:
        """seq (N, T) item indices, padding at the end -> states (N, T, d), causal."""
        T = seq.shape[1]
        pos = torch.arange(T, device=seq.device)
        x = self.drop(self.norm(self.item_emb(seq) + self.pos_emb(pos)[None]))  # (N, T, d)
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=seq.device, dtype=x.dtype)
        return self.encoder(x, mask=mask, is_causal=True)  # (N, T, d)

    def windows(self, items: Tensor, lengths: Tensor, needed: Tensor) -> Tensor:
        """Gather window sequences: items (B, L), needed (K, 2) rows of (user b, window w) -> (K, T)."""
        T, s = self.config.max_len, self.config.stride
        b, w = needed[:, 0], needed[:, 1]
        idx = s * w[:, None] + torch.arange(T, device=items.device)[None]  # (K, T) event indices
        valid = idx < lengths[b][:, None]
        seq = items[b[:, None], idx.clamp(max=items.shape[1] - 1)]
        return torch.where(valid, seq, torch.zeros_like(seq))

    def states_at(self, items: Tensor, lengths: Tensor, last: Tensor) -> Tensor:
        """User vectors at event index `last` (B, Q) (-1 = no history -> zero vector): (B, Q, d).

        One causal pass: each needed window is encoded once and shared by all queries reading it.
        """
        B, Q = last.shape
        T, s = self.config.max_len, self.config.stride
        has = last >= 0
        i = last.clamp(min=0)
        w = reading_window(i, T)  # (B, Q)
        bq = torch.arange(B, device=last.device)[:, None].expand(B, Q)
        key = (bq * (int(w.max()) + 1 if w.numel() else 1) + w)[has]
        d = self.config.hidden
        out = torch.zeros(B, Q, d, device=self.item_emb.weight.device, dtype=self.item_emb.weight.dtype)
        if key.numel() == 0:
            return out
        uniq, inv = torch.unique(key, return_inverse=True)
        stride_w = int(w.max()) + 1
        needed = torch.stack([uniq // stride_w, uniq % stride_w], 1)  # (K, 2)
        out[has] = self.encode_at(self.windows(items, lengths, needed), inv, (i - s * w)[has])
        return out

    def encode_at(self, seq: Tensor, rows: Tensor, pos: Tensor) -> Tensor:
        """encode(seq)[rows, pos] (M, d), with the last layer computed only where it is read.

        The last layer's keys and values still cover every position, but its query, output projection
        and feed-forward run for the distinct read positions only. A user's requests read about one
        position in six of their windows, so this saves about a third of inference work. Training
        (dropout active) takes the plain path.
        """
        layers = self.encoder.layers
        last = layers[-1]
        if self.training or self.encoder.norm is not None or last.norm_first:
            return self.encode(seq)[rows, pos]
        K, T = seq.shape
        x = self.norm(self.item_emb(seq) + self.pos_emb(torch.arange(T, device=seq.device))[None])
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=seq.device, dtype=x.dtype)
        for layer in layers[:-1]:
            x = layer(x, src_mask=mask, is_causal=True)
        # the distinct (window, position) pairs read, packed per window into (K, P) slots
        uniq, inv = torch.unique(rows * T + pos, return_inverse=True)
        ru, pu = uniq // T, uniq % T
        count = torch.bincount(ru, minlength=K)
        slot = torch.arange(len(uniq), device=seq.device) - (torch.cumsum(count, 0) - count)[ru]
        P = int(count.max())
        qpos = torch.zeros(K, P, dtype=torch.long, device=seq.device)
        qpos[ru, slot] = pu
        attn = last.self_attn
        d, h = x.shape[-1], attn.num_heads
        wq, wk, wv = attn.in_proj_weight.chunk(3)
        bq, bk, bv = attn.in_proj_bias.chunk(3)
        xq = x[torch.arange(K, device=seq.device)[:, None], qpos]  # (K, P, d)

        def heads(t: Tensor) -> Tensor:
            return t.view(K, -1, h, d // h).transpose(1, 2)  # (K, h, n, d/h)

        see = torch.arange(T, device=seq.device)[None, None, None] <= qpos[:, None, :, None]  # (K, 1, P, T)
        o = nn.functional.scaled_dot_product_attention(
            heads(nn.functional.linear(xq, wq, bq)), heads(nn.functional.linear(x, wk, bk)),
            heads(nn.functional.linear(x, wv, bv)), attn_mask=see)
        y = last.norm1(xq + attn.out_proj(o.transpose(1, 2).reshape(K, P, d)))
        y = last.norm2(y + last.linear2(last.activation(last.linear1(y))))
        return y[ru, slot][inv]

    def user_vectors(self, items: Tensor, times: Tensor, query_time: Tensor) -> Tensor:
        """(B, Q, d) user vectors as of each query time (events with time < query time only)."""
        lengths = (items != 0).sum(1)
        last = visible_count(times, query_time) - 1  # (B, Q)
        last = torch.minimum(last, lengths[:, None] - 1)
        return self.states_at(items, lengths, last)

    def score(self, user: Tensor, candidates: Tensor) -> Tensor:
        """user (B, Q, d), candidates (B, Q, C) -> (B, Q, C) dot products, -inf at index 0."""
        return score_live(candidates, user, lambda u, c: torch.bmm(self.item_emb(c), u.unsqueeze(-1)).squeeze(-1))

    def logits_all(self, user: Tensor) -> Tensor:
        """user (N, d) -> (N, V+1) logits over the whole catalogue; pad column -inf."""
        logits = user @ self.item_emb.weight.T  # (N, V+1)
        pad = torch.zeros_like(logits[0], dtype=torch.bool)
        pad[0] = True
        return logits.masked_fill(pad, float("-inf"))
