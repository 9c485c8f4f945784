"""taxonc.compiler: spec loading, analysis, lowering and code generation."""

__version__ = "0.1.0"
