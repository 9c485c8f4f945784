"""Loss terms: cross-entropy, PaLM's z-loss, the MoE load-balancing loss, SFT masks."""

from __future__ import annotations

import math

import pytest
import torch

from taxonc.compiler.compile import compile_spec
from taxonc.runtime.artifact import load_source
from taxonc.runtime.train.losses import micro_batch_loss, token_losses

from .conftest import SPECS


def logits_of_order_5(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = 5 * torch.randn(2, 6, 11, generator=g, dtype=torch.float64)
    return logits, torch.randint(0, 11, (2, 6), generator=g)


def reference(logits: torch.Tensor, targets: torch.Tensor, z: float) -> torch.Tensor:
    """Written from the definitions: -log softmax(target) + z * (log sum_j exp l_j)^2."""
    out = torch.empty(targets.shape, dtype=torch.float64)
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            row = logits[b, t].tolist()
            log_z = math.log(sum(math.exp(v) for v in row))
            out[b, t] = log_z - row[targets[b, t]] + z * log_z**2
    return out


@pytest.mark.parametrize("z", [0.0, 1e-4, 0.1])
def test_cross_entropy_and_z_loss_match_their_definitions(z: float) -> None:
    logits, targets = logits_of_order_5()
    assert torch.allclose(token_losses(logits, targets, z).double(), reference(logits, targets, z), rtol=1e-5)


def test_a_wrong_z_convention_is_caught() -> None:
    """log(Z)^2, not Z^2 nor log(Z): the tolerance above separates them at logits of order 5."""
    logits, targets = logits_of_order_5()
    ce = reference(logits, targets, 0.0)
    log_z = torch.logsumexp(logits, -1)
    for wrong in (ce + 0.1 * log_z, ce + 0.1 * log_z.exp().square()):
        assert not torch.allclose(token_losses(logits, targets, 0.1).double(), wrong, rtol=1e-5)


def test_masked_tokens_do_not_count() -> None:
    logits, targets = logits_of_order_5()
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, 3:] = True
    loss, summed = micro_batch_loss(torch.nn.Identity(), logits, targets, mask, int(mask.sum()), 0.0, 0.0, 1)
    want = reference(logits, targets, 0.0)[:, 3:].mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-6)
    assert float(summed) == pytest.approx(float(want) * 6, rel=1e-6)


def test_the_moe_load_balancing_loss_is_added_with_the_recipes_weight() -> None:
    build = load_source(compile_spec(SPECS / "glam.toml", scale="tiny").files["model.py"]).build
    torch.manual_seed(0)
    model = build().train()
    ids = torch.randint(0, 512, (2, 9))
    logits = model(ids[:, :-1])
    aux = model.aux_loss()
    assert aux.requires_grad and aux.item() > 0
    plain, _ = micro_batch_loss(model, logits, ids[:, 1:], None, 16, 0.0, 0.0, 1)
    weighted, _ = micro_batch_loss(model, logits, ids[:, 1:], None, 16, 0.0, 0.01, 2)
    assert (weighted - plain).item() == pytest.approx(0.01 * aux.item() / 2, rel=1e-4)  # fp32 difference
    weighted.backward()
    routers = [p for n, p in model.named_parameters() if "router" in n]
    assert routers and all(p.grad is not None and p.grad.abs().sum() > 0 for p in routers)


def test_prefix_lm_counts_only_what_the_prefix_cannot_see() -> None:
    from taxonc.runtime.train.objectives import prefix_lengths, prefix_target_mask

    lengths = prefix_lengths(0, 5, 100, 16)
    assert lengths == prefix_lengths(0, 5, 100, 16) and lengths != prefix_lengths(0, 6, 100, 16)
    assert min(lengths) >= 1 and max(lengths) <= 15
    assert prefix_target_mask(4, 2, 8).tolist() == [[False] * 3 + [True] * 5] * 2


def test_the_prefix_lm_loss_sees_no_future_token() -> None:
    """Changing a counted target's token leaves every counted position's logits unchanged: the
    prefix's bidirectional attention never reaches what the loss asks it to predict."""
    from taxonc.runtime.train.objectives import prefix_target_mask

    build = load_source(compile_spec(SPECS / "glm-130b.toml", scale="tiny").files["model.py"]).build
    torch.manual_seed(0)
    model = build().eval()
    ids = torch.randint(0, 512, (1, 13))
    P, mask = 5, prefix_target_mask(5, 1, 12)[0]
    for j in torch.nonzero(mask).flatten().tolist():
        changed = ids.clone()
        changed[0, j + 1] = (changed[0, j + 1] + 1) % 512  # the target of position j
        with torch.no_grad():
            a, b = model(ids[:, :-1], prefix_len=P), model(changed[:, :-1], prefix_len=P)
        assert torch.equal(a[0, : j + 1], b[0, : j + 1]), j
    with torch.no_grad():  # the mask is needed: inside the prefix, a target is visible
        changed = ids.clone()
        changed[0, 2] += 1
        assert not torch.equal(model(ids[:, :-1], prefix_len=P)[0, 1], model(changed[:, :-1], prefix_len=P)[0, 1])


@pytest.mark.parametrize("raw", [8, 33, 64, 200])
def test_span_corruption_splits_a_window_into_input_and_target_that_rebuild_it(raw: int) -> None:
    import random

    from taxonc.runtime.train.objectives import span_corruption, span_counts, span_lengths

    sentinels, eos = list(range(1000, 1032)), 999
    for seed in range(20):
        tokens = random.Random(seed).choices(range(500), k=raw)
        enc, tgt = span_corruption(tokens, random.Random(seed), sentinels, eos)
        assert (len(enc), len(tgt)) == span_lengths(raw)
        noise, spans = span_counts(raw)
        assert sum(t in sentinels for t in enc) == sum(t in sentinels for t in tgt) == spans
        assert len(tgt) - spans - 1 == noise  # the target holds exactly the noise tokens
        # put every span back after its sentinel: the original window
        fill, current = {}, None
        for t in tgt[:-1]:
            if t in sentinels:
                current = t
                fill[t] = []
            else:
                fill[current].append(t)
        rebuilt = [x for t in enc[:-1] for x in (fill[t] if t in sentinels else [t])]
        assert rebuilt == tokens and enc[-1] == tgt[-1] == eos


@pytest.mark.parametrize(("raw", "encoder_len"), [(8, 3), (33, 11), (64, 42)])
def test_seq2seq_gives_the_encoder_the_prefix_and_the_decoder_the_rest(raw: int, encoder_len: int) -> None:
    """AlphaCode (Li et al. 2022, section 4.2): the encoder reads a file up to a pivot, the decoder
    predicts what follows it, starting from its start id."""
    from taxonc.runtime.train.objectives import seq2seq_batch

    g = torch.Generator().manual_seed(raw)
    ids = torch.randint(3, 500, (4, raw + 1), generator=g)  # windows of T+1 tokens, as the sampler gives
    encoder, decoder_in, target = seq2seq_batch(ids, encoder_len, start_id=1)
    window = ids[:, :-1]
    assert torch.equal(encoder, window[:, :encoder_len])
    assert torch.equal(torch.cat([encoder, target], dim=1), window)  # nothing lost, nothing repeated
    assert torch.equal(decoder_in[:, 0], torch.ones(4, dtype=torch.long))
    assert torch.equal(decoder_in[:, 1:], target[:, :-1])  # teacher forcing: one position behind


def test_seq2seq_split_follows_the_contexts() -> None:
    from taxonc.runtime.train.objectives import seq2seq_encoder_len

    assert seq2seq_encoder_len(1536 + 768, 1536, 768) == 1536  # AlphaCode's own lengths
    assert seq2seq_encoder_len(96, 32, 64) == 32
    for t in range(2, 200):
        e = seq2seq_encoder_len(t, 32, 64)
        assert 1 <= e <= t - 1


BLANK = {"mask": 900, "gmask": 901, "start": 902, "end": 903}


@pytest.mark.parametrize("seq_len", [16, 32, 64, 128])
def test_blank_infilling_part_b_rebuilds_the_masked_spans_in_part_a(seq_len: int) -> None:
    """GLM (Du et al. 2022, section 2.1): part A is the text with each span replaced by [MASK]
    ([gMASK] for one span to the end); part B lists the spans, each read after a start token and
    predicted up to an end token; only part B counts. Filling each mask with its span gives the text."""
    from taxonc.runtime.train.objectives import BlankIds, blank_batch

    ids_of = BlankIds(**BLANK)
    g = torch.Generator().manual_seed(seq_len)
    for step in range(12):
        ids = torch.randint(3, 500, (8, seq_len + 1), generator=g)
        x, y, counted, prefixes = blank_batch(ids, seed=1, step=step, micro_batch=4, ids=ids_of)
        assert x.shape == y.shape == counted.shape == (8, seq_len) and len(prefixes) == 2
        for r in range(8):
            a_len = prefixes[r // 4]
            a, b, labels = x[r, :a_len].tolist(), x[r, a_len:].tolist(), y[r, a_len:].tolist()
            assert counted[r].tolist() == [False] * a_len + [True] * (seq_len - a_len)
            starts = [i for i, t in enumerate(b) if t == BLANK["start"]]
            spans = [labels[i:j][:-1] for i, j in zip(starts, [*starts[1:], len(b)])]
            assert all(labels[j - 1] == BLANK["end"] for j in [*starts[1:], len(b)])  # each span ends with [end]
            for i, j in zip(starts, [*starts[1:], len(b)]):  # teacher forcing inside part B
                assert b[i + 1 : j] == labels[i : j - 1]
            masks = [t for t in a if t in (BLANK["mask"], BLANK["gmask"])]
            assert len(masks) == len(spans) >= 1
            if masks == [BLANK["gmask"]]:
                assert a[-1] == BLANK["gmask"]  # [gMASK] blanks everything after the kept prefix
            filled = iter(spans)
            text = [t for tok in a for t in (next(filled) if tok in (BLANK["mask"], BLANK["gmask"]) else [tok])]
            assert text == ids[r, : len(text)].tolist()  # the window's own text, from its start
            assert len(text) >= seq_len - 2 * len(spans) - 1


def test_blank_infilling_uses_both_masks_at_glm_130b_rates() -> None:
    """GLM-130B (Zeng et al. 2022, section 2.2, recalled): [MASK] short spans on 30% of sequences, [gMASK]
    on the rest; here drawn per micro-batch."""
    from taxonc.runtime.train.objectives import BlankIds, blank_batch

    ids = torch.randint(3, 500, (2, 65), generator=torch.Generator().manual_seed(0))
    short = 0
    for step in range(400):
        x, _, _, _ = blank_batch(ids, seed=0, step=step, micro_batch=2, ids=BlankIds(**BLANK))
        short += int((x[0] == BLANK["mask"]).any())
    assert 0.24 < short / 400 < 0.36
