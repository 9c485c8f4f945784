"""taxonc.runtime.train: a training loop that follows a spec's recipe.

The compiler builds a `Recipe` (plain data, recipe.py) from the spec and hands it, with the
emitted model's module, to `loop.train`. Nothing here imports taxonc.compiler.
"""
