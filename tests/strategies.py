"""The project's own tests draw specs from the public strategies in taxonc.testing."""

from taxonc.testing.strategies import spec_dicts

__all__ = ["spec_dicts"]
