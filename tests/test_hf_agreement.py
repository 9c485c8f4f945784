"""taxonc's emitted models against Hugging Face transformers, weight for weight.

For four architectures (LLaMA, GPT-NeoX, BLOOM, OPT) a tiny config (2 layers, d_model 64,
4 heads, vocab 128, context 64) is built twice: as a randomly initialised transformers model
(no downloads) and as a taxonc spec compiled to model.py. The transformers weights are copied
into the taxonc model (taxonc.compiler.interop.hf does the renaming and the fused layouts) and
the fp32 logits must agree to 1e-4.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from taxonc.compiler.interop.hf import ARCHS, TINY, build_pair, hf_logits, map_weights, per_head_qkv_to_stacked  # noqa: E402

TOL = 1e-4


def _ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, TINY.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def _fp32_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_transformers(arch, attn, tmp_path):
    hf, ours, compiled = build_pair(arch, TINY, attn_implementation=attn, workdir=tmp_path)
    assert compiled.spec.dims.n_layers == 2 and compiled.spec.dims.d_model == 64
    with torch.inference_mode():
        for batch, length in ((2, TINY.context), (1, 37)):
            ids = _ids(batch, length)
            ref = hf_logits(hf, ids)
            got = ours(ids)
            assert got.shape == ref.shape == (batch, length, TINY.vocab_size)
            assert got.dtype == ref.dtype == torch.float32
            # the comparison means something only if the logits depend on the input and position
            assert ref.std() > 1e-2
            diff = (got - ref).abs().max().item()
            assert diff <= TOL, f"{arch}/{attn} B={batch} T={length}: max |taxonc - HF| = {diff:.3g}"


def test_mapping_has_teeth(tmp_path):
    """Loading NeoX's per-head query_key_value without the reorder must visibly disagree,
    so the 1e-4 comparison above is not passing vacuously."""
    hf, ours, _ = build_pair("neox", TINY, attn_implementation="sdpa", workdir=tmp_path)
    sd = map_weights("neox", hf, TINY)
    for i in range(TINY.n_layers):
        for wb in ("weight", "bias"):
            sd[f"layers.{i}.qkv.{wb}"] = hf.state_dict()[f"gpt_neox.layers.{i}.attention.query_key_value.{wb}"]
    ours.load_state_dict(sd)
    ids = _ids(1, TINY.context)
    with torch.inference_mode():
        assert (ours(ids) - hf_logits(hf, ids)).abs().max().item() > 100 * TOL


def test_per_head_reorder():
    n_heads, d_head, d_in = 3, 2, 5
    rows = torch.arange(3 * n_heads * d_head, dtype=torch.float32)
    weight = rows[:, None].expand(-1, d_in)
    out = per_head_qkv_to_stacked(weight, n_heads)
    # row r of the input is head r // (3 d_head), role (r // d_head) % 3, dim r % d_head
    expect = [h * 3 * d_head + role * d_head + k for role in range(3) for h in range(n_heads) for k in range(d_head)]
    assert out[:, 0].tolist() == expect
    assert per_head_qkv_to_stacked(rows, n_heads).tolist() == expect
