"""A model's shape as the cost model needs it, read from a Hugging Face config (no weights)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Canonical names of the adaptable linear maps of a block (SPEC §4). Gated FFNs (LLaMA family) add `ffn_gate`.
BASE_MATRICES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
GATED_MATRICES = ("query", "key", "value", "attn_out", "ffn_gate", "ffn_in", "ffn_out")

LLAMA_LIKE = {"llama", "qwen2", "mistral"}

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class ArchError(ValueError):
    """A config that makes no usable model; `key` is the config field at fault (for the error's path)."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(message)


# Upper bounds far above any real model (the largest have ~100-200 blocks, widths of tens of thousands), so that
# a slip such as 10^20 layers is refused instead of allocating per-block tables until the machine gives up.
LIMITS = {"layers": 10_000, "width": 1_000_000, "heads": 100_000, "vocab": 100_000_000,
          "positions": 100_000_000, "labels": 100_000}
_ROLE = {"n_layer": "layers", "num_hidden_layers": "layers", "n_embd": "width", "hidden_size": "width",
         "n_inner": "width", "intermediate_size": "width", "head_dim": "width", "n_head": "heads",
         "num_attention_heads": "heads", "num_key_value_heads": "heads", "vocab_size": "vocab",
         "n_positions": "positions", "max_position_embeddings": "positions", "num_labels": "labels"}


def _size(config: Any, key: str, *, minimum: int = 1, default: Any = None) -> int:
    """A whole-number dimension of the config, checked: a float, a string or 0 layers would otherwise fail deep in
    the cost model or in torch with a message that names neither the field nor the fix."""
    value = getattr(config, key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArchError(key, f"{key} must be a whole number (got {value!r})")
    if value < minimum:
        raise ArchError(key, f"{key} must be at least {minimum} (got {value})")
    maximum = LIMITS[_ROLE[key]]
    if value > maximum:
        raise ArchError(key, f"{key} must be at most {maximum:,} (got {value:,}); no real model comes near it")
    return value


def _divides(config: Any, whole: str, part: str) -> None:
    a, b = getattr(config, whole), getattr(config, part)
    if a % b:
        raise ArchError(part, f"{part} ({b}) must divide {whole} ({a}): attention splits {whole} across the heads")


@dataclass(frozen=True)
class ModelArch:
    """Dimensions of a transformer: enough to count FLOPs, bytes and parameters per block."""

    family: str  # "gpt2" | "llama" | "bert"
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    max_positions: int
    task: str  # "causal_lm" | "classification"
    num_labels: int = 2
    tie_embeddings: bool = True

    @property
    def gated(self) -> bool:
        return self.family == "llama"

    @property
    def matrices(self) -> tuple[str, ...]:
        return GATED_MATRICES if self.gated else BASE_MATRICES

    def matrix_shape(self, name: str) -> tuple[int, int]:
        """(in_features, out_features) of one adaptable matrix."""
        h, q_out, kv_out = self.hidden, self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        shapes = {
            "query": (h, q_out),
            "key": (h, kv_out),
            "value": (h, kv_out),
            "attn_out": (q_out, h),
            "ffn_gate": (h, self.ffn),
            "ffn_in": (h, self.ffn),
            "ffn_out": (self.ffn, h),
        }
        if name not in self.matrices:
            raise KeyError(f"matrix {name!r} does not exist in a {self.family} block; it has {list(self.matrices)}")
        return shapes[name]

    # -- parameter counts (frozen base) -------------------------------------------------------------------
    @property
    def block_params(self) -> int:
        linear = sum(i * o for i, o in (self.matrix_shape(m) for m in self.matrices))
        if self.family == "llama":
            return linear + 2 * self.hidden  # two RMSNorm weights, no biases
        biases = sum(o for _, o in (self.matrix_shape(m) for m in self.matrices))
        return linear + biases + 4 * self.hidden  # two LayerNorms (weight + bias)

    @property
    def embedding_params(self) -> int:
        positions = 0 if self.family == "llama" else self.max_positions * self.hidden
        token_types = 2 * self.hidden + 2 * self.hidden if self.family == "bert" else 0  # type emb + LN
        return self.vocab * self.hidden + positions + token_types

    @property
    def head_params(self) -> int:
        """Final norm + output head (the LM head counts only when not tied to the embeddings)."""
        norm = self.hidden if self.family == "llama" else 2 * self.hidden
        if self.task == "classification":
            pooler = self.hidden * self.hidden + self.hidden if self.family == "bert" else 0
            return pooler + self.hidden * self.num_labels + self.num_labels + (0 if self.family == "bert" else norm)
        lm_head = 0 if self.tie_embeddings else self.vocab * self.hidden
        return norm + lm_head

    @property
    def total_params(self) -> int:
        return self.embedding_params + self.n_layers * self.block_params + self.head_params

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, config: Any, task: str | None = None) -> ModelArch:
        """Read the dimensions from a transformers config object (GPT-2, LLaMA/Qwen2/Mistral, BERT)."""
        kind = getattr(config, "model_type", None)
        labels = _size(config, "num_labels", default=2)
        if kind == "gpt2":
            layers, hidden, heads = (_size(config, k) for k in ("n_layer", "n_embd", "n_head"))
            _divides(config, "n_embd", "n_head")
            inner = getattr(config, "n_inner", None)
            return cls(
                family="gpt2", n_layers=layers, hidden=hidden, n_heads=heads, n_kv_heads=heads,
                head_dim=hidden // heads, ffn=4 * hidden if inner is None else _size(config, "n_inner"),
                vocab=_size(config, "vocab_size"), max_positions=_size(config, "n_positions"),
                task=task or "causal_lm", num_labels=labels,
                tie_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
            )
        if kind in LLAMA_LIKE:
            layers, hidden, heads = (_size(config, k) for k in ("num_hidden_layers", "hidden_size",
                                                                "num_attention_heads"))
            if getattr(config, "head_dim", None) is None:
                _divides(config, "hidden_size", "num_attention_heads")
                head_dim = hidden // heads
            else:
                head_dim = _size(config, "head_dim")
            if head_dim % 2:
                key = "head_dim" if getattr(config, "head_dim", None) is not None else "num_attention_heads"
                raise ArchError(key, f"the head size must be even for rotary position embeddings (RoPE); "
                                f"{hidden} / {heads} heads gives {head_dim}" if key != "head_dim" else
                                f"head_dim must be even for rotary position embeddings (RoPE) (got {head_dim})")
            kv = heads if getattr(config, "num_key_value_heads", None) is None else _size(config, "num_key_value_heads")
            if heads % kv:
                raise ArchError("num_key_value_heads", f"num_key_value_heads ({kv}) must divide num_attention_heads "
                                f"({heads}): each key/value head serves a group of query heads")
            return cls(
                family="llama", n_layers=layers, hidden=hidden, n_heads=heads, n_kv_heads=kv, head_dim=head_dim,
                ffn=_size(config, "intermediate_size"), vocab=_size(config, "vocab_size"),
                max_positions=_size(config, "max_position_embeddings"), task=task or "causal_lm",
                num_labels=labels, tie_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            )
        if kind == "bert":
            layers, hidden, heads = (_size(config, k) for k in ("num_hidden_layers", "hidden_size",
                                                                "num_attention_heads"))
            _divides(config, "hidden_size", "num_attention_heads")
            return cls(
                family="bert", n_layers=layers, hidden=hidden, n_heads=heads, n_kv_heads=heads,
                head_dim=hidden // heads, ffn=_size(config, "intermediate_size"), vocab=_size(config, "vocab_size"),
                max_positions=_size(config, "max_position_embeddings"), task=task or "classification",
                num_labels=labels,
            )
        raise ValueError(
            f"model_type {kind!r} is not supported; use a gpt2, llama, qwen2, mistral or bert config"
        )
