"""Norms and activations. Shape suffixes: B batch, T positions, F width."""

import torch
import torch.nn as nn
import torch.nn.functional as F


def rms_norm(x, weight, eps):
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # fp16/bf16 lose the mean square
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return xf.to(x.dtype) * weight


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def activate(x_BTF, kind):
    if kind == "relu":
        return F.relu(x_BTF)
    if kind == "gelu":
        return F.gelu(x_BTF)  # exact, with erf
    if kind == "gelu-tanh":
        return F.gelu(x_BTF, approximate="tanh")
    if kind == "solu":
        return x_BTF * torch.softmax(x_BTF, dim=-1)
    raise ValueError(kind)


def glu(gate_BTF, up_BTF, kind):
    if kind == "swiglu":
        return F.silu(gate_BTF) * up_BTF
    if kind == "geglu":
        return F.gelu(gate_BTF) * up_BTF
    if kind == "geglu-tanh":
        return F.gelu(gate_BTF, approximate="tanh") * up_BTF
    raise ValueError(kind)
