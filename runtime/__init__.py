"""taxonc.runtime: loads compiled artifacts and runs them (weights, caches, samplers).

    from taxonc.runtime import load, SamplerConfig, Tokenizer

    artifact = load("out/llama-tiny", seed=0)   # model.py + spec.lock.json (+ weights.safetensors)
    logits = artifact.model(input_ids)          # (B, T, vocab)

Token generation with the KV cache is `taxonc.runtime.generate.generate`; it stays in its
module so that the name `taxonc.runtime.generate` keeps meaning the module.
"""

from .artifact import Artifact, load
from .errors import ArtifactError, RuntimeFailure, TokenizerError, WeightsError
from .generate import Generation
from .sampling import SamplerConfig
from .text_tokenizer import TextTokenizer, load_tokenizer, tokenizer_in
from .tokenizer import Tokenizer, default_tokenizer_path, train_tokenizer
from .weights import load_weights, save_weights

__all__ = [
    "Artifact",
    "ArtifactError",
    "Generation",
    "RuntimeFailure",
    "SamplerConfig",
    "TextTokenizer",
    "Tokenizer",
    "TokenizerError",
    "WeightsError",
    "default_tokenizer_path",
    "load",
    "load_tokenizer",
    "load_weights",
    "save_weights",
    "tokenizer_in",
    "train_tokenizer",
]
