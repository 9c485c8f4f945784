"""taxonc.runtime: loads compiled artifacts and runs them (weights, caches, samplers)."""
