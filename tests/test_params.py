"""Parameter counts read off the lowered graph agree with the emitted module where the old analytic count did not."""

from __future__ import annotations

from pathlib import Path

from taxonc.compiler.analysis import count_params
from taxonc.compiler.compile import compile_spec
from taxonc.compiler.spec.derive import derive
from taxonc.compiler.spec.dump import toml_string

from .conftest import SPECS
from .helpers import INHERIT_IDENTITY
from taxonc.runtime.artifact import load_source


def test_encoder_decoder_with_shared_xl_biases_counts_each_stacks_biases(tmp_path: Path) -> None:
    """Encoder and decoder embeddings each hold their own shared Transformer-XL u and w."""
    spec = tmp_path / "t5-xl.toml"
    spec.write_text(f'extends = {toml_string(str((SPECS / "t5").resolve()))}\n{INHERIT_IDENTITY}[model]\nname = "t5-xl"\n'
                    '[position]\nkind = "relative-xl"\nshared_biases = true\n')
    compiled = compile_spec(spec)
    model = load_source(compiled.files["model.py"], "t5_xl").build(device="meta")
    names = {name for name, _ in model.named_parameters()}
    assert {"embed.xl_bias.u", "encoder_embed.xl_bias.u"} <= names
    counts = count_params(compiled.spec)
    assert sum(p.numel() for p in model.parameters()) == counts.total
    h, dh = compiled.spec.dims.n_heads, derive(compiled.spec).d_head
    assert counts.components["position.content_position_biases"] == 2 * 2 * h * dh  # u and w, twice
