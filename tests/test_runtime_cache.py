"""Incremental decoding with the KV cache gives the logits of a full forward pass, for every spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from taxonc.runtime.inputs import extra_inputs

from .spec_sets import MODEL_FILES, spec_params
from .test_backend_torch import tiny

PROMPT, TOTAL = 5, 24  # longer than tiny windows (16) and several RETRO chunks (8)


def _model(path: Path, dtype=torch.float32):
    compiled, module = tiny(path)
    torch.manual_seed(0)
    model = module.build(dtype=dtype).eval()
    with torch.no_grad():  # perturb norms, biases and gates so every path carries signal
        for name, p in model.named_parameters():
            if p.dim() == 1 or name.endswith("alpha"):
                p.add_(0.1 * torch.randn_like(p))
            else:
                p.mul_(2.5)
    return compiled, module, model


@pytest.mark.parametrize("path", spec_params(MODEL_FILES))
def test_cached_decoding_equals_full_forward(path: Path) -> None:
    compiled, module, model = _model(path)
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, compiled.spec.dims.vocab_size, (2, TOTAL), generator=gen)
    kw = extra_inputs(compiled.spec, 2, TOTAL, generator=gen, dtype=torch.float32)
    prefix = PROMPT if compiled.spec.model.structure == "prefix-lm" else 0
    with torch.no_grad():
        full = model(ids, prefix_len=prefix, **kw)
        cache = module.KVCache()
        steps = [model(ids[:, :PROMPT], prefix_len=prefix, cache=cache, **kw)]
        for t in range(PROMPT, TOTAL):
            steps.append(model(ids[:, t : t + 1], cache=cache, **kw))
    incremental = torch.cat(steps, dim=1)
    assert (incremental - full).abs().max() <= 1e-5 * max(1.0, full.abs().max().item())
    assert cache.length == TOTAL


def test_grouped_and_multi_query_caches_shrink_by_the_head_ratio() -> None:
    from .conftest import SPECS

    sizes = {}
    for name in ("llama", "palm"):  # multi-head vs multi-query at tiny scale
        compiled, module, model = _model(SPECS / f"{name}.toml")
        cache = module.KVCache()
        with torch.no_grad():
            model(torch.zeros(1, 8, dtype=torch.long), cache=cache)
        spec = compiled.spec
        per_token_layer = cache.nbytes() / (8 * spec.dims.n_layers)
        sizes[name] = per_token_layer
        assert per_token_layer == 2 * compiled.summary()["n_kv_heads"] * compiled.summary()["d_head"] * 4
    assert sizes["llama"] / sizes["palm"] == 4  # 4 query heads sharing 1 key/value head at tiny scale


def test_banded_layers_keep_only_their_window() -> None:
    from .conftest import SPECS

    compiled, module, model = _model(SPECS / "gpt3.toml")
    window = compiled.spec.attention.sparse.window
    cache = module.KVCache()
    with torch.no_grad():
        model(torch.zeros(1, 40, dtype=torch.long), cache=cache)
    assert cache.keys["layers.1"].shape[2] == window - 1  # banded
    assert cache.keys["layers.0"].shape[2] == 40  # dense


def test_encoder_runs_once_and_stays_out_of_the_cache() -> None:
    from .conftest import SPECS

    compiled, module, model = _model(SPECS / "alphacode.toml")
    gen = torch.Generator().manual_seed(0)
    kw = extra_inputs(compiled.spec, 1, 4, generator=gen, dtype=torch.float32)
    cache = module.KVCache()
    with torch.no_grad():
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache, **kw)
        memory = cache.static["memory"]
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache, **kw)
    assert all(name.startswith("layers.") for name in cache.keys)
    assert cache.static["memory"] is memory  # not recomputed on the second step
