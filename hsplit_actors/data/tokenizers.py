"""Tokenizers from files in the repository or in the MiniLM package (never a hub)."""

from __future__ import annotations

from functools import cache

from hsplit_actors.data import DATA_DIR
from hsplit_actors.errors import ScenarioError


@cache
def gpt2_tokenizer():
    """GPT-2's byte-level BPE from data/gpt2-tokenizer. In transformers 5, GPT2TokenizerFast(vocab_file=...) and
    even GPT2Tokenizer(vocab_file=..., merges_file=...) with keywords silently build a 1-token tokenizer;
    `from_pretrained(dir)` of the slow class reads the files correctly (and the size is checked below)."""
    from transformers import GPT2Tokenizer

    folder = DATA_DIR / "gpt2-tokenizer"
    tok = GPT2Tokenizer.from_pretrained(str(folder), local_files_only=True)
    tok.pad_token = tok.eos_token
    if len(tok) != 50257:
        raise RuntimeError(f"GPT-2 tokenizer from {folder} has {len(tok)} tokens, expected 50257")
    return tok


@cache
def bert_tokenizer():
    """MiniLM's WordPiece tokenizer from data/minilm-tokenizer (a copy of the one shipped with its weights), so
    random-weight MiniLM needs no package."""
    from transformers import BertTokenizerFast

    folder = DATA_DIR / "minilm-tokenizer"
    if not (folder / "vocab.txt").is_file():
        raise ScenarioError(f"MiniLM's tokenizer is missing: {folder / 'vocab.txt'} does not exist; restore the "
                            "repository's data/ folder or point HSPLIT_DATA_DIR at a copy of it", field="model")
    tok = BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    if len(tok) != 30522:
        raise RuntimeError(f"MiniLM tokenizer from {folder} has {len(tok)} tokens, expected 30522")
    return tok
