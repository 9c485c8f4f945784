"""Initialisation follows parameter roles, not parameter names.

DeepNet (Wang et al. 2022) scales the init of values, attention outputs and MLP weights by
beta and leaves queries and keys alone. After fuse_qkv the three live in one `qkv.weight`,
so only its v rows may carry beta: GLM-130B (sqrt-2n scaling) is the spec that uses it.
"""

from __future__ import annotations

import torch

from taxonc.compiler.compile import compile_spec
from taxonc.compiler.spec import derive
from taxonc.runtime.artifact import load_source

from .conftest import SPECS


def _glm():
    compiled = compile_spec(SPECS / "glm-130b.toml", scale="tiny")
    torch.manual_seed(0)
    return compiled, load_source(compiled.files["model.py"], "glm_init").build(dtype=torch.float64)


def test_glm_130b_scales_only_the_value_rows_of_the_fused_projection() -> None:
    compiled, model = _glm()
    arch = derive(compiled.spec)
    std = compiled.spec.training.init_std
    beta = arch.deepnorm_beta
    assert beta < 0.5  # (2N)^-1/2: far enough from 1 that a wrong scale shows
    q_rows = compiled.spec.dims.n_heads * arch.d_head
    kv_rows = arch.n_kv_heads * arch.d_head
    for layer in model.layers:
        qkv = layer.qkv.weight.detach()
        q, k, v = qkv[:q_rows], qkv[q_rows:q_rows + kv_rows], qkv[q_rows + kv_rows:]
        torch.testing.assert_close(q.std().item(), std, rtol=0.1, atol=0)
        torch.testing.assert_close(k.std().item(), std, rtol=0.1, atol=0)
        torch.testing.assert_close(v.std().item(), beta * std, rtol=0.1, atol=0)
        torch.testing.assert_close(layer.attn_out.weight.std().item(), beta * std, rtol=0.1, atol=0)


def test_init_reads_roles_from_the_graph() -> None:
    compiled, _ = _glm()
    roles = {p.role.value for n in compiled.graph.nodes() if n.name == "qkv" for p in n.attrs.packs}
    assert roles == {"q", "k", "v"}
