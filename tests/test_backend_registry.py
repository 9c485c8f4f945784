"""One table of backends: compile_spec and the CLI read it, and compile_spec takes keywords only."""

from __future__ import annotations

import json

import pytest

from taxonc.compiler.backends.registry import BACKENDS, Backend, backend_names, get_backend
from taxonc.compiler.compile import compile_spec
from taxonc.compiler.errors import UsageError
from taxonc.compiler.passes import PASSES, PIPELINE

from .conftest import SPECS


def test_registry_names_the_three_backends() -> None:
    assert list(BACKENDS) == ["torch", "triton", "mlir"]
    assert backend_names() == "torch, triton, mlir"
    for name, backend in BACKENDS.items():
        assert isinstance(backend, Backend) and backend.name == name and backend.description
    with pytest.raises(TypeError):
        BACKENDS["x"] = BACKENDS["torch"]  # type: ignore[index]


def test_backend_passes_are_registered_and_outside_the_shared_pipeline() -> None:
    for backend in BACKENDS.values():
        for name in backend.passes:
            assert name in PASSES and name not in PIPELINE, (backend.name, name)
    assert BACKENDS["triton"].passes == ("select_kernels",)


def test_unknown_backend_is_a_usage_error_naming_the_allowed_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown backend 'cuda'; backends are: torch, triton, mlir"):
        get_backend("cuda")
    with pytest.raises(UsageError, match="backends are: torch, triton, mlir"):
        compile_spec(SPECS / "llama.toml", backend="cuda", scale="tiny")


def test_compile_spec_takes_everything_after_the_path_by_keyword() -> None:
    with pytest.raises(TypeError):
        compile_spec(SPECS / "llama.toml", "torch")  # type: ignore[misc]
    with pytest.raises(TypeError):
        compile_spec(SPECS / "llama.toml", "torch", "tiny")  # type: ignore[misc]


def test_mlir_compiles_the_torch_model_and_records_its_backend() -> None:
    torch_side = compile_spec(SPECS / "llama.toml", backend="torch", scale="tiny")
    mlir_side = compile_spec(SPECS / "llama.toml", backend="mlir", scale="tiny")
    assert mlir_side.files["model.py"] == torch_side.files["model.py"]
    assert json.loads(mlir_side.files["spec.lock.json"])["backend"] == "mlir"
