"""The spec language: schema, loading with `extends`, validation and derived values."""

from .derive import Arch, LayerPlan, derive
from .load import Origin, ResolvedSpec, is_abstract, load_spec
from .model import ModelSpec

__all__ = ["Arch", "LayerPlan", "ModelSpec", "Origin", "ResolvedSpec", "derive", "is_abstract", "load_spec"]
