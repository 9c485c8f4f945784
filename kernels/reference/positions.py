"""Position encodings: sinusoids, rotary tables and rotation, ALiBi slopes, T5 buckets.

Shape suffixes: T query positions, S key positions, H heads, K head width, R rotated dims."""

import math

import torch


def sinusoidal_table(positions_T, dim, dtype):
    inv = torch.exp(torch.arange(0, dim, 2, device=positions_T.device, dtype=torch.float64) * (-math.log(10000.0) / dim))
    angles = positions_T.to(torch.float64)[:, None] * inv[None, :]
    # sin in the even columns, cos in the odd ones, interleaved by stack + flatten: slice
    # assignment (table[:, 0::2] = ...) has no StableHLO lowering in torch-mlir
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(1).to(dtype)


def rotary_tables(positions_T, rot_dims, base, dtype):
    work = torch.float64 if dtype == torch.float64 else torch.float32  # fp32 angles, as HF computes them
    inv = 1.0 / (base ** (torch.arange(0, rot_dims, 2, device=positions_T.device, dtype=work) / rot_dims))
    angles = positions_T.to(work)[:, None] * inv[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def scaled_rotary_tables(positions_T, rot_dims, base, dtype, scaling):
    """rotary_tables with frequencies stretched for long contexts. `scaling` holds kind ('linear', 'yarn' or
    'llama3'), factor and the kind's own numbers, as transformers' rope_parameters names them."""
    work = torch.float64 if dtype == torch.float64 else torch.float32
    inv = 1.0 / (base ** (torch.arange(0, rot_dims, 2, device=positions_T.device, dtype=work) / rot_dims))
    # a dict written here, not at module level: the torch backend copies only functions into model.py
    frequencies = {"linear": linear_frequencies, "yarn": yarn_frequencies, "llama3": llama3_frequencies}
    inv, gain = frequencies[scaling["kind"]](inv, rot_dims, base, scaling)
    angles = positions_T.to(work)[:, None] * inv[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return (angles.cos() * gain).to(dtype), (angles.sin() * gain).to(dtype)


def linear_frequencies(inv_R, rot_dims, base, scaling):
    # position interpolation: positions squeezed by the factor, the same as every frequency divided by it
    return inv_R / scaling["factor"], 1.0


def llama3_frequencies(inv_R, rot_dims, base, scaling):
    # long wavelengths are interpolated, short ones kept, and the band between blends the two smoothly
    factor, context = scaling["factor"], scaling["original_context"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    wavelength = 2 * math.pi / inv_R
    scaled = torch.where(wavelength > context / low, inv_R / factor, inv_R)
    smooth = (context / wavelength - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelength >= context / high) & (wavelength <= context / low)
    return torch.where(medium, blended, scaled), 1.0


def yarn_frequencies(inv_R, rot_dims, base, scaling):
    factor, context = scaling["factor"], scaling["original_context"]
    gain = scaling.get("attention_factor") or (0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0)

    def dim_of(rotations):  # the dim whose wavelength turns `rotations` times over the original context
        return rot_dims * math.log(context / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(dim_of(scaling.get("beta_fast") or 32)), 0)
    high = min(math.ceil(dim_of(scaling.get("beta_slow") or 1)), rot_dims - 1)
    high = high + 0.001 if low == high else high  # a ramp of width zero would divide by zero
    ramp = ((torch.arange(rot_dims // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1).to(inv_R)
    # dims below the ramp keep their frequency (extrapolate), dims above it are interpolated
    return inv_R / factor * ramp + inv_R * (1 - ramp), gain


def apply_rotary(x_BHTK, cos_TR, sin_TR):
    rot = cos_TR.shape[-1]  # rotate-half convention on the first R dims of each head; the rest pass through
    x_rot, x_pass = x_BHTK[..., :rot], x_BHTK[..., rot:]
    x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2 :]
    rotated = torch.cat([-x2, x1], dim=-1)
    return torch.cat([x_rot * cos_TR + rotated * sin_TR, x_pass], dim=-1)


def pairs_to_halves(x_BTF, n_heads, rot_dims):
    """Interleaved rotary pairs (dims 2i, 2i+1 of each head: GPT-J, RoFormer) moved to dims i and i + R/2,
    where apply_rotary's rotate-half turns them. q and k are reordered alike, and attention reads them
    only through their dot products, so this computes interleaved rotary embedding exactly."""
    x_BTHK = x_BTF.unflatten(-1, (n_heads, -1))
    pairs, rest = x_BTHK[..., :rot_dims], x_BTHK[..., rot_dims:]
    halves = pairs.unflatten(-1, (rot_dims // 2, 2)).transpose(-1, -2).flatten(-2)
    return torch.cat([halves, rest], dim=-1).flatten(-2)


def halves_to_pairs(x_BTF, n_heads, rot_dims):
    """The inverse of pairs_to_halves: rotated dims back to their interleaved places."""
    x_BTHK = x_BTF.unflatten(-1, (n_heads, -1))
    halves, rest = x_BTHK[..., :rot_dims], x_BTHK[..., rot_dims:]
    pairs = halves.unflatten(-1, (2, rot_dims // 2)).transpose(-1, -2).flatten(-2)
    return torch.cat([pairs, rest], dim=-1).flatten(-2)


def alibi_slopes(n_heads):
    # geometric slopes for the nearest power of two, then every other slope of the next one
    def powers(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = powers(closest)
    if closest < n_heads:
        slopes += powers(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float64)


def relative_buckets(rel_TS, n_buckets, max_distance, bidirectional):
    # T5's log-spaced buckets of (key position - query position)
    buckets = torch.zeros_like(rel_TS)
    if bidirectional:
        n_buckets //= 2
        buckets = buckets + (rel_TS > 0).long() * n_buckets
        distance = rel_TS.abs()
    else:
        distance = (-rel_TS).clamp(min=0)
    exact = n_buckets // 2
    is_small = distance < exact
    log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = exact + (log_ratio * (n_buckets - exact)).long()
    large = large.clamp(max=n_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


def rotary_flat(x_BTF, n_heads, cos_TR, sin_TR):
    """apply_rotary on a projection whose heads are still flattened into the last dim."""
    x_BHTK = x_BTF.unflatten(-1, (n_heads, -1)).transpose(1, 2)
    return apply_rotary(x_BHTK, cos_TR, sin_TR).transpose(1, 2).flatten(2)
