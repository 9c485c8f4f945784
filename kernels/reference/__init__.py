"""Plain-torch reference ops: the neutral home every layer of taxonc may import.

The graph interpreter runs them, the torch backend copies their definitions verbatim into
the `model.py` it emits (so that file needs torch alone), and each Triton kernel is tested
against them. Keep every definition self-contained: torch, math, dataclasses, enum and the
definitions of this package only.
"""
