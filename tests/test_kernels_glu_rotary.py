"""GLU, bias + activation and rotary kernels against their references.

On CPU-only machines the kernels run on the Triton interpreter (conftest sets
TRITON_INTERPRET=1), in fp32, at tiny shapes: one odd shape and one power-of-two shape per
op, with the launch blocks shrunk (monkeypatched) so that rows, columns and heads span
several programs with a partial last block. Tolerance (FlashAttention rule): the kernel's
max error against an fp64 reference is at most 2x the max error of the eager reference run
in the test dtype, plus 1e-6. bf16/fp16 tests need CUDA.
"""

from __future__ import annotations

import math

import pytest
import torch

from taxonc.kernels.reference.positions import apply_rotary, rotary_tables
from taxonc.kernels import glu as glu_mod
from taxonc.kernels import rotary as rotary_mod
from taxonc.kernels.glu import bias_act, bias_act_ref, glu, glu_ref
from taxonc.kernels.rotary import rotary, rotary_ref

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs CUDA")
DEVICE = "cuda" if CUDA else "cpu"


@pytest.fixture
def small_blocks(monkeypatch):
    """Shrink the launch blocks so tiny shapes still cover several programs per axis."""
    monkeypatch.setattr(glu_mod, "_BLOCK_COLS", 16)
    monkeypatch.setattr(glu_mod, "_BWD_BLOCK_M", 4)
    monkeypatch.setattr(glu_mod, "_BWD_ROW_SPLITS", 3)
    monkeypatch.setattr(rotary_mod, "_BLOCK_H", 2)


def _max_err(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def _run(fn, inputs, grad_out_fn):
    """Outputs and input grads of fn on copies of inputs (None entries pass through)."""
    leaves = [None if t is None else t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*leaves)
    out.backward(grad_out_fn(out))
    return [out.detach()] + [None if t is None else t.grad for t in leaves]


def check_fa(kernel, ref, inputs, dtype, seed=0):
    """FlashAttention rule on the output and on every input grad: |kernel - fp64| <= 2|eager - fp64| + 1e-6."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    grad_out = None

    def make_grad(out):  # one upstream grad, representable in dtype, shared by all three runs
        nonlocal grad_out
        if grad_out is None:
            grad_out = torch.randn(out.shape, generator=g).to(dtype).to(out.device)
        return grad_out.to(out.dtype)

    low = [None if t is None else t.to(dtype) for t in inputs]
    exact = _run(ref, [None if t is None else t.double() for t in low], make_grad)
    eager = _run(ref, low, make_grad)
    got = _run(kernel, low, make_grad)
    names = ["out"] + [f"grad[{i}]" for i in range(len(inputs))]
    for name, e, a, k in zip(names, exact, eager, got):
        if e is None:
            continue
        assert k is not None and k.shape == e.shape and k.dtype == dtype, name
        err, bound = _max_err(k, e), 2 * _max_err(a, e) + 1e-6
        assert err <= bound, f"{name}: kernel error {err:.3g} > bound {bound:.3g}"


def _randn(*shape, std=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * std).to(DEVICE)


# --- glu -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["swiglu", "geglu", "geglu-tanh"])
@pytest.mark.parametrize("shape", [(2, 7, 40), (4, 64)])  # (..., F): odd and power of two
def test_glu_matches_reference(kind, shape, small_blocks):
    *lead, F = shape
    # a projection's output: x (std 1) through weights with std 1/sqrt(fan_in) gives std ~1;
    # scale 2 also exercises the saturated tails of the activations
    gate_up = _randn(*lead, 2 * F, std=2.0)
    check_fa(lambda x: glu(x, kind), lambda x: glu_ref(x, kind), [gate_up], torch.float32)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # numpy, interpreter
def test_glu_extremes_and_layout(small_blocks):
    # saturation: exp overflow must give 0 (silu, gelu -> 0 for gate -> -inf), not nan
    gate = torch.tensor([-1e4, -100.0, -30.0, -1e-3, 0.0, 1e-3, 30.0, 100.0], device=DEVICE)
    gate_up = torch.cat([gate, torch.full_like(gate, 1.5)])[None]
    for kind in ("swiglu", "geglu", "geglu-tanh"):
        out = glu(gate_up, kind)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, glu_ref(gate_up, kind), rtol=1e-6, atol=1e-6)
    # [gate | up] halves, not interleaved: a non-contiguous input is accepted
    gu = _randn(8, 2, 10).transpose(0, 1)  # (2, 8, 10), strided
    torch.testing.assert_close(glu(gu, "swiglu"), glu_ref(gu, "swiglu"), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        glu(_randn(3, 5), "swiglu")
    with pytest.raises(ValueError):
        glu(gu, "reglu")
    assert glu(torch.empty(0, 8, device=DEVICE), "geglu").shape == (0, 4)


# --- bias_act --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gelu", "gelu-tanh", "relu"])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape", [(2, 7, 40), (4, 64)])
def test_bias_act_matches_reference(kind, with_bias, shape, small_blocks):
    x = _randn(*shape, std=2.0, seed=1)
    bias = _randn(shape[-1], std=0.5, seed=2) if with_bias else None
    check_fa(lambda a, b: bias_act(a, b, kind), lambda a, b: bias_act_ref(a, b, kind), [x, bias], torch.float32)


def test_exact_and_tanh_gelu_are_different_kernels(small_blocks):
    """The two GELU flavours differ by up to ~1e-3 near |x| = 2; each kernel matches its own reference
    to far better than that, so a swapped flavour cannot pass the tests above."""
    x = torch.linspace(-4, 4, 64, device=DEVICE)[None]
    exact, approx = bias_act(x, None, "gelu"), bias_act(x, None, "gelu-tanh")
    assert (exact - approx).abs().max() > 1e-4
    torch.testing.assert_close(exact, torch.nn.functional.gelu(x), rtol=1e-6, atol=1e-6)
    gate_up = torch.cat([x, torch.ones_like(x)], dim=-1)
    assert (glu(gate_up, "geglu") - glu(gate_up, "geglu-tanh")).abs().max() > 1e-4


def test_bias_act_default_blocks_and_errors():
    # the shipped launch sizes (one row split, one column block) on a tiny odd shape
    x, bias = _randn(5, 3, 24, seed=3), _randn(24, seed=4)
    check_fa(lambda a, b: bias_act(a, b, "gelu"), lambda a, b: bias_act_ref(a, b, "gelu"), [x, bias], torch.float32)
    with pytest.raises(ValueError):
        bias_act(x, _randn(23), "gelu")
    with pytest.raises(ValueError):
        bias_act(x, bias, "silu")


# --- rotary ----------------------------------------------------------------------------------

def _tables(T, R, dtype=torch.float32):
    cos, sin = rotary_tables(torch.arange(T, device=DEVICE) + 3, R, 10000.0, dtype)
    return cos, sin


@pytest.mark.parametrize("B,T,H,K,R", [(2, 7, 3, 24, 8), (2, 16, 4, 32, 32)])
def test_rotary_matches_reference(B, T, H, K, R, small_blocks):
    x = _randn(B, T, H, K, seed=5)
    cos, sin = _tables(T, R)
    ref = lambda a: rotary_ref(a, cos.to(a.dtype), sin.to(a.dtype))  # noqa: E731 - fp64 run: fp64 tables
    check_fa(lambda a: rotary(a, cos, sin), ref, [x], torch.float32)


def test_rotary_ref_is_prelude_apply_rotary():
    x = _randn(2, 7, 3, 24, seed=6)
    cos, sin = _tables(7, 8)
    expected = apply_rotary(x.transpose(1, 2), cos, sin).transpose(1, 2)
    torch.testing.assert_close(rotary_ref(x, cos, sin), expected, rtol=0, atol=0)


def test_rotary_q_and_k_from_fused_projection(small_blocks):
    # q (H=3 heads) and k (G=1 head) as strided views of one qkv projection, (B, T, H + 2G, K)
    B, T, H, G, K, R = 2, 7, 3, 1, 24, 8
    qkv = _randn(B, T, (H + 2 * G) * K, seed=7).unflatten(-1, (H + 2 * G, K))
    q, k = qkv[:, :, :H], qkv[:, :, H:H + G]
    assert not q.is_contiguous()
    cos, sin = _tables(T, R)
    for x in (q, k):
        out = rotary(x, cos, sin)
        assert out.shape == x.shape and out.is_contiguous()
        torch.testing.assert_close(out, rotary_ref(x, cos, sin), rtol=1e-6, atol=1e-6)
    # pass-through dims are copied bit for bit
    assert torch.equal(rotary(q, cos, sin)[..., R:], q[..., R:])


def test_rotary_general_tables_and_table_grads(small_blocks):
    # tables that are not half-duplicated: the kernel follows apply_rotary exactly, and the
    # backward is the transpose of the forward (not a rotation by -theta)
    B, T, H, K, R = 1, 5, 3, 12, 8
    x = _randn(B, T, H, K, seed=8)
    cos, sin = _randn(T, R, seed=9), _randn(T, R, seed=10)
    check_fa(lambda a, c, s: rotary(a, c, s), rotary_ref, [x, cos, sin], torch.float32)


def test_rotary_backward_is_rotation_by_minus_theta():
    x = _randn(1, 7, 2, 16, seed=11)
    cos, sin = _tables(7, 16)
    xr = x.clone().requires_grad_()
    out = rotary(xr, cos, sin)
    out.backward(out.detach())  # grad = R(theta) x, so the backward gives R(-theta) R(theta) x = x
    torch.testing.assert_close(xr.grad, x, rtol=1e-5, atol=1e-5)


def test_rotary_errors():
    x = _randn(1, 4, 2, 8)
    cos, sin = _tables(4, 8)
    with pytest.raises(ValueError):
        rotary(x, cos[:, :6].contiguous(), sin)  # cos and sin differ
    with pytest.raises(ValueError):
        rotary(x, *_tables(4, 10))  # R > K
    with pytest.raises(ValueError):
        rotary(x, *_tables(3, 8))  # wrong T
    with pytest.raises(ValueError):
        rotary(x[0], cos, sin)  # not 4-d


# --- low precision, GPU only -----------------------------------------------------------------

@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_gpu(dtype):
    for kind in ("swiglu", "geglu"):
        gu = _randn(3, 257, 2 * 1100, std=2.0, seed=12)
        check_fa(lambda x: glu(x, kind), lambda x: glu_ref(x, kind), [gu], dtype)
    x, bias = _randn(3, 257, 1100, std=2.0, seed=13), _randn(1100, std=0.5, seed=14)
    for kind in ("gelu", "relu"):
        check_fa(lambda a, b: bias_act(a, b, kind), lambda a, b: bias_act_ref(a, b, kind), [x, bias], dtype)
    for H, K, R in ((32, 128, 128), (5, 80, 32)):
        x = _randn(2, 129, H, K, seed=15)
        cos, sin = _tables(129, R, dtype)
        check_fa(lambda a: rotary(a, cos, sin), lambda a: rotary_ref(a, cos.to(a.dtype), sin.to(a.dtype)), [x], dtype)


# --- benchmark smoke test --------------------------------------------------------------------

def test_benchmark_runs_on_cpu_at_tiny_shapes():
    from .helpers import run_script

    records = run_script("benchmarks/gpu_glu_rotary.py", "--device", "cpu", "--reps", "2")  # the harness, not a measurement
    kernels = {r["kernel"] for r in records}
    assert {"glu_swiglu_fwd", "glu_geglu_fwd", "bias_gelu_fwd", "rotary_fwd"} <= kernels
    for r in records:
        assert r["ms"] > 0 and r["gbps"] > 0 and math.isfinite(r["speedup_vs_eager"])
        assert r["speedup_vs_compile"] is None and r["provider"] in ("triton", "eager")
