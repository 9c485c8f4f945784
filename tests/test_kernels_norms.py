"""Norm kernels (taxonc.kernels.norms) against their plain-torch references.

On CPU-only machines the kernels run under the Triton interpreter (tests/conftest.py sets
TRITON_INTERPRET=1), so the shapes are tiny and the dtypes fp32/fp16. Tolerance is the
FlashAttention rule of shared/perf.md: the kernel's max error against the reference run in
fp64 must be <= 2x the max error of the eager reference run in the test dtype, + 1e-6.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from taxonc.kernels import norms

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = [(3, 5, 48), (2, 64)]  # one odd (15 rows, 48 wide: masked block), one power of two
EPS = 1e-5
HAS_TRITON = importlib.util.find_spec("triton") is not None
# Without Triton the ops fall back to their references, so a comparison would prove nothing.
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="needs triton (GPU or interpreter)")


def _fa_check(name, got, eager, want):
    assert got.shape == want.shape and got.dtype == eager.dtype, name
    k_err = (got.double() - want).abs().max().item()
    e_err = (eager.double() - want).abs().max().item()
    assert k_err <= 2 * e_err + 1e-6, f"{name}: kernel err {k_err:.3g} > 2 x eager err {e_err:.3g} + 1e-6"


def _make(shape, dtype, residual, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = shape[-1]
    t = {
        "x": torch.randn(shape, generator=g),
        "residual": torch.randn(shape, generator=g) if residual else None,
        "weight": 1 + 0.1 * torch.randn(n, generator=g),
        "bias": 0.1 * torch.randn(n, generator=g) if bias else None,
        "dy": torch.randn(shape, generator=g),
        "ds": torch.randn(shape, generator=g),
    }
    return {k: None if v is None else v.to(DEVICE, dtype) for k, v in t.items()}


def _call(kind, fn_kernel, t, dtype, use_y=True, use_s=True):
    """Run the op (or its reference) on copies of `t` in `dtype`; return outputs and grads."""
    ref = {"rms": norms.rms_norm_ref, "ln": norms.layer_norm_ref}[kind]
    ker = {"rms": norms.rms_norm, "ln": norms.layer_norm}[kind]
    fn = ker if fn_kernel else ref
    leaves = {k: t[k].to(dtype).requires_grad_() for k in ("x", "residual", "weight", "bias") if t[k] is not None}
    x, r, w, b = (leaves.get(k) for k in ("x", "residual", "weight", "bias"))
    y, s = fn(x, w, EPS, r) if kind == "rms" else fn(x, w, b, EPS, r)
    assert (s is None) == (r is None)
    loss = 0
    if use_y:
        loss = loss + (y * t["dy"].to(dtype)).sum()
    if s is not None and use_s:
        loss = loss + (s * t["ds"].to(dtype)).sum()
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[k] for k in names], allow_unused=True)
    out = {"y": y.detach()}
    if s is not None:
        out["s"] = s.detach()
    out.update({f"d{k}": g_ for k, g_ in zip(names, grads) if g_ is not None})
    return out


def _compare(kind, t, dtype, **kw):
    # Round the inputs to the test dtype first, so the fp64 reference sees the same values.
    t = {k: None if v is None else v.to(dtype) for k, v in t.items()}
    got = _call(kind, True, t, dtype, **kw)
    eager = _call(kind, False, t, dtype, **kw)
    want = _call(kind, False, t, torch.float64, **kw)
    assert got.keys() == eager.keys() == want.keys()
    for k in want:
        _fa_check(k, got[k], eager[k], want[k])
        assert got[k].dtype == dtype


@needs_triton
@pytest.mark.parametrize("shape", SHAPES, ids=["odd", "pow2"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("kind,bias", [("rms", False), ("ln", True), ("ln", False)],
                         ids=["rms", "ln_bias", "ln_nobias"])
def test_norm_forward_backward_fp32(kind, bias, residual, shape):
    _compare(kind, _make(shape, torch.float32, residual, bias), torch.float32)


@needs_triton
@pytest.mark.parametrize("kind,bias", [("rms", False), ("ln", True)], ids=["rms", "ln"])
def test_norm_fp16(kind, bias):
    # Loads are cast to fp32 at once, so fp16 is meaningful under the interpreter too.
    _compare(kind, _make((3, 5, 48), torch.float32, True, bias, seed=1), torch.float16)


@needs_triton
@pytest.mark.parametrize("kind", ["rms", "ln"])
def test_residual_upstream_grad_paths(kind):
    t = _make((3, 5, 48), torch.float32, True, True, seed=2)
    # Only the normed output feeds the loss (no upstream grad on the sum) ...
    _compare(kind, t, torch.float32, use_s=False)
    # ... and only the sum: dx = dresidual = ds, weight gets a zero gradient.
    got = _call(kind, True, t, torch.float32, use_y=False)
    torch.testing.assert_close(got["dx"], t["ds"], rtol=0, atol=0)
    torch.testing.assert_close(got["dresidual"], t["ds"], rtol=0, atol=0)
    assert not got.get("dweight", torch.zeros(1)).any()


@needs_triton
def test_non_contiguous_input_and_leading_shape():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 48, 7, generator=g).to(DEVICE).transpose(1, 2)  # (2, 7, 48), strided
    r = torch.randn(2, 7, 48, generator=g).to(DEVICE)
    w = (1 + 0.1 * torch.randn(48, generator=g)).to(DEVICE)
    b = (0.1 * torch.randn(48, generator=g)).to(DEVICE)
    for got, want in [
        (norms.rms_norm(x, w, EPS, r), norms.rms_norm_ref(x, w, EPS, r)),
        (norms.layer_norm(x, w, b, EPS), norms.layer_norm_ref(x, w, b, EPS)),
    ]:
        assert got[0].shape == (2, 7, 48)
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
        if want[1] is not None:
            torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)


@needs_triton
@pytest.mark.parametrize("shape", SHAPES, ids=["odd", "pow2"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_solu_layer_norm(shape, bias):
    g = torch.Generator().manual_seed(4)
    n = shape[-1]
    x = torch.randn(shape, generator=g)
    w = 1 + 0.1 * torch.randn(n, generator=g)
    b = 0.1 * torch.randn(n, generator=g) if bias else None
    dy = torch.randn(shape, generator=g)

    def run(fn, dtype):
        leaves = [t.to(DEVICE, dtype).requires_grad_() for t in (x, w, b) if t is not None]
        y = fn(leaves[0], leaves[1], leaves[2] if bias else None, EPS)
        grads = torch.autograd.grad((y * dy.to(DEVICE, dtype)).sum(), leaves)
        return [y.detach(), *grads]

    got = run(norms.solu_layer_norm, torch.float32)
    eager = run(norms.solu_layer_norm_ref, torch.float32)
    want = run(norms.solu_layer_norm_ref, torch.float64)
    for name, g_, e_, w_ in zip(["y", "dx", "dweight", "dbias"], got, eager, want):
        _fa_check(name, g_, e_, w_)


def test_shape_checks():
    x = torch.randn(2, 8, device=DEVICE)
    with pytest.raises(ValueError):
        norms.rms_norm(x, torch.ones(7, device=DEVICE), EPS)
    with pytest.raises(ValueError):
        norms.layer_norm(x, torch.ones(8, device=DEVICE), None, EPS, residual=torch.randn(2, 7, device=DEVICE))


def test_import_and_cpu_fallback_without_triton():
    # Importing the module must not need Triton; on CPU without the interpreter the ops run
    # their references.
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import os; os.environ.pop('TRITON_INTERPRET', None)\n"
        "import torch\n"
        "from taxonc.kernels import norms\n"
        "x = torch.randn(3, 16); w = torch.ones(16)\n"
        "y, s = norms.rms_norm(x, w, 1e-5, x)\n"
        "assert torch.equal(y, norms.rms_norm_ref(x, w, 1e-5, x)[0])\n"
        "assert norms.solu_layer_norm(x, w, None, 1e-5).shape == x.shape\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr


def test_gpu_bench_cpu_smoke():
    from .helpers import run_script

    rows = run_script("benchmarks/gpu_norms.py", "--cpu")  # tiny fp32 shape
    keys = {"kernel", "provider", "shape", "dtype", "ms", "gbps", "speedup_vs_eager", "speedup_vs_compile"}
    assert rows and all(keys <= r.keys() for r in rows)
    kernels = {r["kernel"] for r in rows}
    assert kernels == {"rms_norm", "rms_norm_residual", "layer_norm"}
    assert all(r["ms"] > 0 and r["gbps"] > 0 and r["speedup_vs_compile"] is None for r in rows)
    triton_rows = [r for r in rows if r["provider"] == "triton"]
    # On CPU the Triton provider runs only under the interpreter (not on a CUDA machine's CPU).
    expected = 3 if norms._use_kernel(torch.zeros(1)) else 0
    assert len(triton_rows) == expected and all(r["ok"] for r in triton_rows)


# --------------------------------------------------------------------------- GPU only (bf16)

@needs_triton
@pytest.mark.parametrize("kind,bias", [("rms", False), ("ln", True), ("ln", False)],
                         ids=["rms", "ln_bias", "ln_nobias"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("shape", [(2, 33, 4096), (256, 1000)], ids=["llama", "odd"])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_norm_bf16_gpu(kind, bias, residual, shape):
    _compare(kind, _make(shape, torch.float32, residual, bias, seed=5), torch.bfloat16)


@needs_triton
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_solu_layer_norm_bf16_gpu():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(64, 3072, generator=g).cuda()
    w = (1 + 0.1 * torch.randn(3072, generator=g)).cuda()
    b = (0.1 * torch.randn(3072, generator=g)).cuda()
    got = norms.solu_layer_norm(x.bfloat16(), w.bfloat16(), b.bfloat16(), EPS)
    eager = norms.solu_layer_norm_ref(x.bfloat16(), w.bfloat16(), b.bfloat16(), EPS)
    want = norms.solu_layer_norm_ref(x.bfloat16().double(), w.bfloat16().double(), b.bfloat16().double(), EPS)
    _fa_check("y", got, eager, want)
