"""Rebuild taxonc-sp.model, the small tokenizer shipped with taxonc.runtime.

    python runtime/data/make_tokenizer.py            # retrain and overwrite the shipped model
    python runtime/data/make_tokenizer.py --check    # retrain to a temp file, compare bytes

Training text: only documents we wrote and may ship, namely the repository README.md and
the project design notes (shared/design.md, beside the repository; --design to point
elsewhere). Third-party text, such as the seed review of transformer models, is left out
on purpose, so the vocabulary carries no one else's text.

Options: SentencePiece BPE, 512 pieces, byte fallback, identity normalisation (exact round
trip), no dummy prefix (encodings concatenate), and the FIM sentinels and feedback control
tokens as user-defined symbols, ids 3-7. Everything else is train_tokenizer's default. One
thread, so the file is byte-for-byte reproducible from the same inputs.

The model is meant for tests, examples and tiny demo models, not for real pretraining.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

from taxonc.runtime.tokenizer import DEFAULT_SPECIAL_TOKENS, Tokenizer, default_tokenizer_path, train_tokenizer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VOCAB_SIZE = 512
MODEL_TYPE = "bpe"

# SHA-256 of the inputs the shipped model was trained on. A mismatch is not an error (the
# README evolves); it explains why --check finds a different model.
TRAINED_ON = {
    "README.md": "245c414131988773186da582cd27ea0a741f13149201f5ec90f1561b677f0446",
    "design.md": "ba4d4744d7d2696213637ba339eef26da9ed1f673b81ca22dbfb67b9baa2b14d",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(out: Path, design: Path) -> Path:
    inputs = [REPO / "README.md", design]
    for path, recorded in zip(inputs, TRAINED_ON.values()):
        if not path.is_file():
            sys.exit(f"error: training text {path} not found")
        if sha256(path) != recorded:
            print(f"note: {path} differs from the text the shipped model was trained on")
    return train_tokenizer(
        inputs, VOCAB_SIZE, MODEL_TYPE, out, special_tokens=DEFAULT_SPECIAL_TOKENS, byte_fallback=True, num_threads=1
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--design", type=Path, default=REPO.parent / "shared" / "design.md")
    parser.add_argument("--out", type=Path, default=default_tokenizer_path())
    parser.add_argument("--check", action="store_true", help="retrain to a temp file and compare with --out")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = build(Path(tmp) / "check.model", args.design).read_bytes()
        same = args.out.is_file() and fresh == args.out.read_bytes()
        print(f"{args.out}: {'matches' if same else 'DIFFERS from'} a fresh build")
        return 0 if same else 1
    path = build(args.out, args.design)
    tok = Tokenizer.load(path)
    print(f"wrote {path} ({path.stat().st_size} bytes, {tok.vocab_size} pieces, sha256 {sha256(path)[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
