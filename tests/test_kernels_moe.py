"""MoE routing and the Triton grouped expert GEMMs (kernels/moe.py).

On CPU-only machines the kernels run under the Triton interpreter in fp32 (conftest sets
TRITON_INTERPRET=1); with CUDA the same tests run on the GPU. Kernel tolerance follows the
FlashAttention rule: the kernel's max error against a float64 reference is at most twice the
eager fp32 reference's, plus 1e-6.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from taxonc.kernels.reference import blocks as prelude
from taxonc.kernels import moe

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
N, D, FF, E = 37, 24, 40, 4  # N not a multiple of any block; D, F not multiples of BLOCK_K=16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny shapes gain nothing from threads, and a busy 2-core machine makes OpenMP spin
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_args(n=N, d=D, f=FF, e=E, top_k=2, router="softmax-top-k", activation="swiglu", bias=True,
              training=False, capacity_factor=1.0, seed=0, dtype=torch.float32, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    gated = 2 if activation in moe.GATED else 1

    def rnd(*shape, std):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * std).to(device=device, dtype=dtype)

    return dict(
        x_BTD=rnd(1, n, d, std=1.0), router_weight_ED=rnd(e, d, std=d**-0.5),
        w_in=rnd(e, gated * f, d, std=d**-0.5), b_in=rnd(e, gated * f, std=0.1) if bias else None,
        w_out=rnd(e, d, f, std=f**-0.5), b_out=rnd(e, d, std=0.1) if bias else None,
        top_k=top_k, capacity_factor=capacity_factor, router_kind=router, activation=activation, training=training,
    )


def cast(args, dtype):
    return {k: v.to(dtype) if isinstance(v, torch.Tensor) else v for k, v in args.items()}


def assert_fa_rule(y, y_ref32, y_ref64):
    err = (y.double() - y_ref64).abs().max().item()
    eager = (y_ref32.double() - y_ref64).abs().max().item()
    assert err <= 2 * eager + 1e-6, f"kernel error {err:.3g} vs eager fp32 error {eager:.3g}"


# ---- routing ------------------------------------------------------------------------------


def brute_route(logits, top_k, router, capacity):
    """Python lists: per expert, first choices in arrival order, then second choices, ..."""
    probs = torch.softmax(logits.float(), -1)
    w, ex = probs.topk(top_k, -1)
    if router == "softmax-top-k" and top_k > 1:
        w = w / w.sum(-1, keepdim=True)
    experts, tokens, weights, offsets = [], [], [], [0]
    for e in range(logits.shape[1]):
        seg = [(n, w[n, r].item()) for r in range(top_k) for n in range(logits.shape[0]) if ex[n, r] == e]
        seg = seg if capacity is None else seg[:capacity]
        experts += [e] * len(seg)
        tokens += [n for n, _ in seg]
        weights += [x for _, x in seg]
        offsets.append(len(tokens))
    return experts, tokens, weights, offsets


@pytest.mark.parametrize("top_k,router,capacity", [(1, "switch", None), (2, "softmax-top-k", None),
                                                   (2, "softmax-top-k", 15), (1, "switch", 7), (3, "softmax-top-k", 20)])
def test_route_matches_brute_force(top_k, router, capacity):
    logits = torch.randn(N, E, generator=torch.Generator().manual_seed(1))
    expert, token, weight, offsets = moe.route(logits, top_k, router, capacity)
    b_expert, b_token, b_weight, b_offsets = brute_route(logits, top_k, router, capacity)
    assert expert.tolist() == b_expert and token.tolist() == b_token and offsets.tolist() == b_offsets
    torch.testing.assert_close(weight, torch.tensor(b_weight), rtol=0, atol=0)
    if capacity is not None:
        assert offsets[-1] < N * top_k  # the shapes above do drop


def test_route_capacity_first_choices_before_second():
    # E=2, k=2: every token reaches both experts. First choices: t0->1, t1->0, t2->1, t3->0
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    expert, token, weight, offsets = moe.route(logits, 2, "softmax-top-k", capacity=3)
    # expert 0: first choices (t1, t3) claim capacity before second choices (t0, t2); t2 is dropped
    assert token.tolist() == [1, 3, 0, 0, 2, 1]
    assert expert.tolist() == [0, 0, 0, 1, 1, 1] and offsets.tolist() == [0, 3, 6]
    probs = torch.softmax(logits, -1)
    torch.testing.assert_close(weight, probs[token, expert])


def test_route_capacity_keeps_arrival_order():
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [2.0, 0.0], [1.0, 0.0], [4.0, 0.0]])
    expert, token, weight, offsets = moe.route(logits, 1, "switch", capacity=2)
    assert token.tolist() == [0, 2, 1] and offsets.tolist() == [0, 2, 3]  # t3, t4 dropped
    torch.testing.assert_close(weight, torch.softmax(logits, -1)[token, expert])  # raw, not renormalised


def test_route_renormalises_softmax_top_k_only():
    logits = torch.randn(N, E, generator=torch.Generator().manual_seed(2))
    _, token, weight, _ = moe.route(logits, 2, "softmax-top-k")
    sums = torch.zeros(N).index_add_(0, token, weight)
    torch.testing.assert_close(sums, torch.ones(N))
    _, token, weight, _ = moe.route(logits, 1, "softmax-top-k")
    torch.testing.assert_close(weight, torch.softmax(logits, -1).max(-1).values[token])


def test_tiles_cover_each_row_once():
    offsets = torch.tensor([0, 0, 37, 40, 40, 73])  # empty experts, a segment of 37 rows
    tile_e, r0, r1, n_tiles = moe._tiles(offsets, 73, 16)
    seen = []
    for e, a, b in zip(tile_e.tolist(), r0.tolist(), r1.tolist()):
        if e < 0:
            continue
        rows = list(range(a, min(a + 16, b)))
        assert rows and all(offsets[e] <= r < offsets[e + 1] for r in rows)
        seen += rows
    assert sorted(seen) == list(range(73)) and n_tiles >= 3 + 1 + 3


# ---- the reference against prelude's module ------------------------------------------------


@pytest.mark.parametrize("top_k,router", [(1, "switch"), (2, "softmax-top-k")])
@pytest.mark.parametrize("activation,bias", [("relu", True), ("gelu", False), ("gelu-tanh", True), ("swiglu", True),
                                             ("geglu", False), ("geglu-tanh", True)])
@pytest.mark.parametrize("training", [False, True])
def test_reference_matches_prelude_module(top_k, router, activation, bias, training):
    args = make_args(top_k=top_k, router=router, activation=activation, bias=bias, training=training, device="cpu")
    m = prelude.MoE(D, FF, E, top_k, args["capacity_factor"], router, activation, bias, bias)
    with torch.no_grad():
        m.router.weight.copy_(args["router_weight_ED"])
        m.w_in.copy_(args["w_in"])
        m.w_out.copy_(args["w_out"])
        if bias:
            m.b_in.copy_(args["b_in"])
            m.b_out.copy_(args["b_out"])
    m.train(training)
    with torch.no_grad():
        y_module = m(args["x_BTD"])
        y, aux = moe.moe_forward_ref(**args)
    torch.testing.assert_close(y, y_module, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(aux, m.aux_loss, rtol=1e-6, atol=1e-7)


# ---- the kernels against the reference -------------------------------------------------------


@pytest.mark.parametrize("top_k,router", [(1, "switch"), (2, "softmax-top-k")])
@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu-tanh", "swiglu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("training", [False, True])
def test_moe_forward_matches_reference(top_k, router, activation, bias, training):
    args = make_args(top_k=top_k, router=router, activation=activation, bias=bias, training=training,
                     seed=hash((top_k, activation, bias)) % 1000)
    y, aux = moe.moe_forward(**args)
    y32, aux32 = moe.moe_forward_ref(**args)
    y64, _ = moe.moe_forward_ref(**cast(args, torch.float64))
    assert_fa_rule(y, y32, y64)
    torch.testing.assert_close(aux, aux32, rtol=0, atol=0)


@pytest.mark.parametrize("n,d,f", [(32, 32, 32), (N, D, FF)])
def test_geglu_and_power_of_two_shape(n, d, f):
    args = make_args(n=n, d=d, f=f, activation="geglu", training=True)
    y, _ = moe.moe_forward(**args)
    assert_fa_rule(y, moe.moe_forward_ref(**args)[0], moe.moe_forward_ref(**cast(args, torch.float64))[0])


def test_training_drops_and_inference_does_not():
    args = make_args(top_k=2, capacity_factor=0.5, training=True)  # capacity ceil(0.5*37*2/4) = 10
    logits = torch.nn.functional.linear(args["x_BTD"][0], args["router_weight_ED"])
    capacity = math.ceil(0.5 * N * 2 / E)
    _, _, _, off_train = moe.route(logits, 2, "softmax-top-k", capacity)
    _, _, _, off_infer = moe.route(logits, 2, "softmax-top-k")
    assert off_train[-1] < N * 2 and (off_train.diff() <= capacity).all() and off_infer[-1] == N * 2
    y_train, _ = moe.moe_forward(**args)
    y_infer, _ = moe.moe_forward(**{**args, "training": False})
    assert_fa_rule(y_train, moe.moe_forward_ref(**args)[0], moe.moe_forward_ref(**cast(args, torch.float64))[0])
    infer = {**args, "training": False}
    assert_fa_rule(y_infer, moe.moe_forward_ref(**infer)[0], moe.moe_forward_ref(**cast(infer, torch.float64))[0])
    assert not torch.allclose(y_train, y_infer)


def test_inference_capacity_factor_caps_eval_like_training():
    """An inference capacity factor drops at eval exactly what the same training factor drops."""
    args = make_args(top_k=2, capacity_factor=0.5, training=True, activation="relu")
    capped = {**args, "training": False, "capacity_factor": 9.0, "inference_capacity_factor": 0.5}
    y_train, _ = moe.moe_forward_ref(**args)
    y_capped, _ = moe.moe_forward_ref(**capped)
    torch.testing.assert_close(y_capped, y_train, rtol=0, atol=0)
    assert_fa_rule(moe.moe_forward(**capped)[0], y_capped, moe.moe_forward_ref(**cast(capped, torch.float64))[0])
    m = prelude.MoE(D, FF, E, 2, 9.0, "softmax-top-k", "relu", True, True, inference_capacity_factor=0.5)
    with torch.no_grad():
        m.router.weight.copy_(args["router_weight_ED"])
        for name in ("w_in", "w_out", "b_in", "b_out"):
            getattr(m, name).copy_(args[name])
        torch.testing.assert_close(m.eval()(args["x_BTD"]), y_train, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(y_capped, moe.moe_forward_ref(**{**capped, "inference_capacity_factor": None})[0])


def test_grouped_mlp_long_segments_and_empty_experts():
    # logits steer most tokens to expert 0 (segments span several tiles) and none to expert 3
    args = make_args(n=50, activation="relu")
    x_ND = args["x_BTD"][0]
    logits = torch.randn(50, E, generator=torch.Generator().manual_seed(3)) + torch.tensor([3.0, 0.0, 0.0, -1e4])
    _, token, weight, offsets = moe.route(logits.to(DEVICE), 2, "softmax-top-k")
    assert offsets[1] - offsets[0] > 32 and offsets[4] == offsets[3]
    mlp = dict(w_in=args["w_in"], b_in=args["b_in"], w_out=args["w_out"], b_out=args["b_out"], activation="relu")
    cfg = moe.MoEConfig(block_m=32, up=(32, 16, 4, 2), down=(16, 32, 4, 2), group_m=2)  # a second tiling
    for weights, config in [(None, None), (weight, cfg)]:
        y = moe.grouped_expert_mlp(x_ND, token, offsets, **mlp, sorted_weights=weights, config=config)
        y32 = moe.grouped_expert_mlp_ref(x_ND, token, offsets, **mlp, sorted_weights=weights)
        y64 = moe.grouped_expert_mlp_ref(x_ND.double(), token, offsets, **{k: v.double() if isinstance(v, torch.Tensor) else v for k, v in mlp.items()},
                                         sorted_weights=weights)
        assert_fa_rule(y, y32, y64)


def test_rejects_bad_arguments():
    args = make_args()
    with pytest.raises(ValueError, match="activation"):
        moe.moe_forward(**{**args, "activation": "solu"})
    with pytest.raises(ValueError, match="router_kind"):
        moe.moe_forward(**{**args, "router_kind": "hash"})
    with pytest.raises(ValueError, match="shapes"):
        moe.moe_forward(**{**args, "w_out": args["w_out"][:, :, :-1]})


def test_import_needs_no_triton():
    code = "import sys, taxonc.kernels.moe; assert 'triton' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- benchmark smoke test, and bf16 on the GPU -------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available() or not moe._interpreting(), reason="CPU interpreter smoke test")
def test_benchmark_runs_on_cpu():
    from .helpers import run_script

    rows = run_script("benchmarks/gpu_moe.py", "--device", "cpu")
    assert {r["provider"] for r in rows} == {"triton", "eager"}
    for r in rows:
        assert r["ms"] > 0 and r["tflops"] > 0 and r["speedup_vs_compile"] is None
        json.dumps(r)


@pytest.mark.parametrize("activation", ["swiglu", "gelu"])
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_grouped_mlp_on_gpu(activation, top_k):
    args = make_args(n=512, d=256, f=512, e=8, top_k=top_k, activation=activation, dtype=torch.bfloat16, device="cuda")
    x_ND = args["x_BTD"][0]
    _, token, weight, offsets = moe.route(torch.nn.functional.linear(x_ND, args["router_weight_ED"]), top_k, "softmax-top-k")
    mlp = dict(w_in=args["w_in"], b_in=args["b_in"], w_out=args["w_out"], b_out=args["b_out"], activation=activation)
    y = moe.grouped_expert_mlp(x_ND, token, offsets, **mlp, sorted_weights=weight)
    y16 = moe.grouped_expert_mlp_ref(x_ND, token, offsets, **mlp, sorted_weights=weight)
    mlp32 = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in mlp.items()}
    y32 = moe.grouped_expert_mlp_ref(x_ND.float(), token, offsets, **mlp32, sorted_weights=weight)
    err, eager = (y.float() - y32).abs().max().item(), (y16.float() - y32).abs().max().item()
    assert err <= 2 * eager + 1e-6, f"kernel bf16 error {err:.3g} vs eager bf16 error {eager:.3g}"
    # the whole layer: same bf16 router logits, so the same routing as the eager loop
    out, aux = moe.moe_forward(**args)
    out16, aux16 = moe.moe_forward_ref(**args)
    assert ((out.float() - out16.float()).norm() / out16.float().norm()).item() < 1e-2
    torch.testing.assert_close(aux, aux16)
