"""The MLIR backend: torch-mlir export to the torch and linalg dialects, parse-back checks, an
IREE run against the torch logits, and one-line errors for what cannot be exported."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn

pytest.importorskip("torch_mlir")
pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")

from taxonc.compiler.backends.mlir_export import MlirExportError, export_mlir, export_mlir_many  # noqa: E402
from taxonc.compiler.backends.mlir_iree import run_linalg  # noqa: E402
from taxonc.compiler.backends.mlir_verify import MlirVerifyError, verify_mlir  # noqa: E402
from taxonc.compiler.compile import compile_spec  # noqa: E402
from taxonc.compiler.errors import UsageError  # noqa: E402
from taxonc.runtime.artifact import load_source  # noqa: E402

from .conftest import SPECS  # noqa: E402


@pytest.fixture(scope="module")
def llama():
    compiled = compile_spec(SPECS / "llama.toml", scale="tiny")
    module = load_source(compiled.files["model.py"], "llama_mlir")
    torch.manual_seed(0)
    model = module.build(dtype=torch.float32).eval()
    ids = torch.randint(0, compiled.spec.dims.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    texts = export_mlir_many(model, (ids,), {}, ("torch", "linalg"))
    return compiled, model, ids, texts


def test_llama_exports_to_torch_and_linalg(llama) -> None:
    _, _, _, texts = llama
    torch_text, linalg_text = texts["torch"], texts["linalg"]
    assert isinstance(torch_text, str) and isinstance(linalg_text, str)
    assert "torch.aten.mm" in torch_text and "func.func @main" in torch_text
    assert "linalg.matmul" in linalg_text and "torch.aten" not in linalg_text
    for text in (torch_text, linalg_text):
        assert verify_mlir(text)["func.func"] == 1
        assert "dense_resource<torch_tensor" in text and "dialect_resources" in text  # weights inlined
        assert "!torch.vtensor<[1,8],si64>" in text or "tensor<1x8xi64>" in text  # static input shape


def test_matmul_count_follows_the_model(llama) -> None:
    compiled, model, _, texts = llama
    n_layers = compiled.spec.dims.n_layers
    linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    # per layer: fused qkv, attention out, fused gate_up, down; then the untied lm head
    assert linears == 4 * n_layers + 1
    expected = linears + 2 * n_layers  # attention adds QK^T and PV per layer
    for dialect in ("torch", "linalg"):
        assert verify_mlir(texts[dialect])["matmul"] == expected, dialect


def test_no_weights_keeps_the_module_small(llama) -> None:
    _, model, ids, texts = llama
    elided = export_mlir(model, (ids,), {}, "torch", elide_weights=True)
    assert len(elided) * 10 < len(texts["torch"])
    assert "dialect_resources" not in elided
    assert verify_mlir(elided)["matmul"] == verify_mlir(texts["torch"])["matmul"]


def test_iree_runs_linalg_like_torch(llama) -> None:
    _, model, ids, texts = llama
    with torch.no_grad():
        reference = model(ids)
    logits = run_linalg(texts["linalg"], ids)
    assert logits.shape == reference.shape
    assert (logits - reference).abs().max().item() <= 1e-4


def test_flexattention_on_gpu_path_fails_in_one_line() -> None:
    """BLOOM's ALiBi takes FlexAttention when traced on a GPU; torch-mlir cannot lower it."""
    source = compile_spec(SPECS / "bloom.toml", scale="tiny").files["model.py"]
    # force the branch attend() takes on a GPU
    source, n = re.subn(r"if q_BHTK\.is_cuda\b[^\n]*:", "if True:", source, count=1)
    assert n == 1
    module = load_source(source, "bloom_flex")
    torch.manual_seed(0)
    model = module.build(dtype=torch.float32)
    ids = torch.randint(0, 64, (1, 8))
    with pytest.raises(MlirExportError) as info:
        export_mlir(model, (ids,), {}, "linalg")
    message = str(info.value)
    assert "\n" not in message and message.startswith("MLIR export to linalg failed:")
    assert "aten.sort" in message and "FlexAttention" in message and "attend" in message


def test_open_ended_slice_assignment_is_refused_for_stablehlo() -> None:
    """torch-mlir's StableHLO lowering of t[:, 0::2] = ... allocates ~32 GiB; export refuses it."""
    source = (
        "import torch\n\n"
        "def sinusoidal_table(x):\n"
        "    t = torch.zeros(x.shape[0], 2 * x.shape[1])\n"
        "    t[:, 0::2] = torch.sin(x)\n"
        "    return t\n\n"
        "class Model(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return sinusoidal_table(x)\n"
    )
    model = load_source(source, "open_slice").Model()
    x = torch.randn(4, 3)
    assert isinstance(export_mlir(model, (x,), {}, "tosa"), str)
    with pytest.raises(MlirExportError) as info:
        export_mlir(model, (x,), {}, "stablehlo")
    message = str(info.value)
    assert "\n" not in message and "aten.slice_scatter" in message and "sinusoidal" in message


def test_unknown_dialect_is_a_usage_error(llama) -> None:
    _, model, ids, _ = llama
    with pytest.raises(UsageError):
        export_mlir(model, (ids,), {}, "spirv")


def test_verify_wants_exactly_one_entry_point() -> None:
    two = ("func.func @a(%x: tensor<2xf32>) -> tensor<2xf32> { return %x : tensor<2xf32> }\n"
           "func.func @b(%x: tensor<2xf32>) -> tensor<2xf32> { return %x : tensor<2xf32> }\n")
    with pytest.raises(MlirVerifyError, match="2 public func.func"):
        verify_mlir(two)
    with pytest.raises(MlirVerifyError, match="does not parse"):
        verify_mlir("func.func @a( {")


def test_verify_reads_tm_tensor_ops() -> None:
    """linalg output keeps top-k and sort as tm_tensor ops (MoE routers); they parse too."""
    text = """func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> {
  %0 = tm_tensor.sort dimension(0) outs(%a : tensor<4xf32>) {
  ^bb0(%x: f32, %y: f32):
    %c = arith.cmpf olt, %x, %y : f32
    tm_tensor.yield %c : i1
  } -> tensor<4xf32>
  return %0 : tensor<4xf32>
}"""
    counts = verify_mlir(text)
    assert counts["func.func"] == 1 and counts["sort"] == 1


# Every spec (25 structures) exported to four dialects and run under IREE: about six minutes on
# two CPU cores, so it runs with the other whole-spec-set checks under --all-specs (spec_sets.py).
@pytest.mark.all_specs
def test_docs_support_table_is_current() -> None:
    """Regenerates the spec x dialect table (every spec, IREE runs linalg) and compares with docs/mlir-support.md."""
    from taxonc.compiler.backends.mlir_export import DIALECTS
    from taxonc.compiler.docs import section_body
    from taxonc.compiler.mlir_support import build_table, spec_paths

    from .conftest import ROOT

    table, summary = build_table(spec_paths(SPECS), list(DIALECTS), 1, 8, True, False)
    current = section_body((ROOT / "docs" / "mlir-support.md").read_text(), "mlir")
    assert current == table, "regenerate: python -m taxonc.compiler.mlir_support --update-docs"
    assert summary["totals"]["torch"] == summary["totals"]["linalg"] == len(spec_paths(SPECS))


def test_compile_cli_writes_a_parsable_linalg_module(tmp_path) -> None:
    from typer.testing import CliRunner

    from taxonc.compiler.backends.mlir_verify import verify_mlir
    from taxonc.compiler.cli import app

    out = tmp_path / "llama-7b-tiny"
    result = CliRunner().invoke(app, ["compile", str(SPECS / "llama-7b.toml"), "--scale", "tiny", "--backend", "mlir",
                                      "--dialect", "linalg", "-o", str(out)])
    assert result.exit_code == 0, result.output
    counts = verify_mlir((out / "model.mlir").read_text())  # raises unless exactly one public func.func
    assert counts["matmul"] == 25
    bad = CliRunner().invoke(app, ["compile", str(SPECS / "llama-7b.toml"), "--scale", "tiny", "--backend", "mlir",
                                   "--dialect", "spirv", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
