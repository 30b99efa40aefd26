"""Where each model family keeps its blocks and matrices, and how each side of a split rebuilds what a block
needs (masks, positions) from the 2-D attention mask that travels with the activations.

One class per family; GPT-2, LLaMA (with Qwen2 and Mistral, which share its structure) and BERT.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

Context = dict[str, Any]


class QKV(nn.Module):
    """GPT-2's fused `c_attn` as three linear maps, so query, key and value can each get their own LoRA rank
    (peft adapts a fused projection only as a whole). The output is the same concatenation `c_attn` returns."""

    def __init__(self, fused: nn.Module, hidden: int, copy_weights: bool = True):
        super().__init__()
        weight = fused.weight.detach()  # Conv1D stores (in, out); Linear wants (out, in)
        bias = fused.bias.detach()
        self.q, self.k, self.v = (nn.Linear(hidden, hidden) for _ in range(3))
        for j, part in enumerate((self.q, self.k, self.v)):
            part.weight = nn.Parameter(_laid_out(weight[:, j * hidden:(j + 1) * hidden].t(), copy_weights))
            part.bias = nn.Parameter(_laid_out(bias[j * hidden:(j + 1) * hidden], copy_weights))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)


def _laid_out(view: torch.Tensor, copy_weights: bool) -> torch.Tensor:
    """A weight in its own contiguous memory, or, where it is replaced at once (a host's skeleton), the view
    itself: copying GPT-2 large's uninitialised matrices took 3.3 s of a host's 3.7 s build."""
    return view.clone(memory_format=torch.contiguous_format) if copy_weights else view


def _conv1d_to_linear(conv: nn.Module, copy_weights: bool = True) -> nn.Linear:
    """GPT-2's Conv1D (weight stored transposed) as an equivalent nn.Linear, so every matrix is (out, in)."""
    n_in, n_out = conv.weight.shape
    linear = nn.Linear(n_in, n_out)
    linear.weight = nn.Parameter(_laid_out(conv.weight.detach().t(), copy_weights))
    linear.bias = nn.Parameter(_laid_out(conv.bias.detach(), copy_weights))
    return linear


class Family:
    """Structure of one model family; `model` is the task model (LM head or classifier included)."""

    name = ""
    matrix_paths: dict[str, str] = {}
    block_path = ""  # where the blocks live, as a module name

    def embedding_modules(self, model: nn.Module) -> list[nn.Module]:
        """Modules before the first block (always on the client)."""
        raise NotImplementedError

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        raise NotImplementedError

    def prepare(self, model: nn.Module, copy_weights: bool = True) -> None:
        """Make every adaptable matrix its own nn.Linear (in place). Numerically the same model. `copy_weights`
        False leaves new matrices as views of the old, for a skeleton whose weights are replaced at once."""

    def restore(self, model: nn.Module) -> None:
        """Undo `prepare` (in place), so transformers saves and loads the model as its own class."""

    def embed(self, model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def context(self, model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Context:
        raise NotImplementedError

    def run_block(self, model: nn.Module, index: int, hidden: torch.Tensor, ctx: Context) -> torch.Tensor:
        raise NotImplementedError

    def head(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm + head: logits."""
        raise NotImplementedError

    def loss(self, model: nn.Module, logits: torch.Tensor, labels: torch.Tensor,
             label_smoothing: float = 0.0) -> torch.Tensor:
        raise NotImplementedError

    def head_modules(self, model: nn.Module) -> list[nn.Module]:
        """Modules after the last block (they live on whichever side holds the head)."""
        raise NotImplementedError

    def trainable_head(self, model: nn.Module) -> list[nn.Module]:
        """Head modules that train alongside the adapters (a classifier; nothing for an LM head)."""
        return []


def causal_loss(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Next-token cross-entropy (-100 ignored): transformers' own loss, or with label smoothing the same shift
    and mean written out (its loss function takes no smoothing)."""
    if not label_smoothing:
        return model.loss_function(logits, labels, vocab_size=model.config.vocab_size)
    shifted = nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
    return nn.functional.cross_entropy(logits.float().view(-1, model.config.vocab_size), shifted.reshape(-1),
                                       ignore_index=-100, label_smoothing=label_smoothing)


class GPT2(Family):
    name = "gpt2"
    matrix_paths = {"query": "attn.c_attn.q", "key": "attn.c_attn.k", "value": "attn.c_attn.v",
                    "attn_out": "attn.c_proj", "ffn_in": "mlp.c_fc", "ffn_out": "mlp.c_proj"}

    block_path = "transformer.h"

    def blocks(self, model):
        return model.transformer.h

    def embedding_modules(self, model):
        return [model.transformer.wte, model.transformer.wpe, model.transformer.drop]

    def prepare(self, model, copy_weights=True):
        """Idempotent: only GPT-2's own Conv1D modules are converted (never a peft wrapper around a Linear)."""
        from transformers.pytorch_utils import Conv1D

        hidden = model.config.n_embd
        for block in model.transformer.h:
            if isinstance(block.attn.c_attn, Conv1D):
                block.attn.c_attn = QKV(block.attn.c_attn, hidden, copy_weights)
            for parent, name in ((block.attn, "c_proj"), (block.mlp, "c_fc"), (block.mlp, "c_proj")):
                module = getattr(parent, name)
                if isinstance(module, Conv1D):
                    setattr(parent, name, _conv1d_to_linear(module, copy_weights))

    def restore(self, model):
        from transformers.pytorch_utils import Conv1D

        def conv(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:  # (out, in) -> Conv1D's (in, out)
            layer = Conv1D(weight.shape[0], weight.shape[1])
            layer.weight = nn.Parameter(weight.detach().t().contiguous())
            layer.bias = nn.Parameter(bias.detach().clone())
            return layer

        for block in model.transformer.h:
            if isinstance(block.attn.c_attn, QKV):
                parts = (block.attn.c_attn.q, block.attn.c_attn.k, block.attn.c_attn.v)
                block.attn.c_attn = conv(torch.cat([p.weight for p in parts]), torch.cat([p.bias for p in parts]))
            for parent, name in ((block.attn, "c_proj"), (block.mlp, "c_fc"), (block.mlp, "c_proj")):
                module = getattr(parent, name)
                if isinstance(module, nn.Linear):
                    setattr(parent, name, conv(module.weight, module.bias))

    def embed(self, model, input_ids):
        t = model.transformer
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        return t.drop(t.wte(input_ids) + t.wpe(positions))

    def context(self, model, hidden, attention_mask):
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        mask = create_causal_mask(config=model.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                  cache=None, position_ids=positions)
        return {"mask": mask, "positions": positions}

    def run_block(self, model, index, hidden, ctx):
        block = model.transformer.h[index]
        return block(hidden, None, ctx["mask"], None, use_cache=False, position_ids=ctx["positions"])

    def head(self, model, hidden):
        return model.lm_head(model.transformer.ln_f(hidden))

    def loss(self, model, logits, labels, label_smoothing=0.0):
        return causal_loss(model, logits, labels, label_smoothing)

    def head_modules(self, model):
        return [model.transformer.ln_f, model.lm_head]


class Llama(Family):
    """LlamaForCausalLM and the models that share its layout (Qwen2, Mistral)."""

    name = "llama"
    matrix_paths = {"query": "self_attn.q_proj", "key": "self_attn.k_proj", "value": "self_attn.v_proj",
                    "attn_out": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_in": "mlp.up_proj",
                    "ffn_out": "mlp.down_proj"}

    block_path = "model.layers"

    def blocks(self, model):
        return model.model.layers

    def embedding_modules(self, model):
        return [model.model.embed_tokens, model.model.rotary_emb]

    def embed(self, model, input_ids):
        return model.model.embed_tokens(input_ids)

    def context(self, model, hidden, attention_mask):
        from transformers.masking_utils import create_sliding_window_causal_mask

        config = model.config
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        args = dict(config=config, inputs_embeds=hidden, attention_mask=attention_mask, cache=None,
                    position_ids=positions)
        layer_types = getattr(config, "layer_types", None)
        sliding = getattr(config, "sliding_window", None)
        masks = {"full_attention": create_causal_mask(**args)}
        if (layer_types and "sliding_attention" in layer_types) or (sliding and not layer_types):
            masks["sliding_attention"] = create_sliding_window_causal_mask(**args)
        return {"masks": masks, "positions": positions,
                "rope": model.model.rotary_emb(hidden, position_ids=positions)}

    def run_block(self, model, index, hidden, ctx):
        config = model.config
        layer_types = getattr(config, "layer_types", None)
        if layer_types:
            kind = layer_types[index]
        else:
            kind = "sliding_attention" if getattr(config, "sliding_window", None) else "full_attention"
        return model.model.layers[index](hidden, attention_mask=ctx["masks"][kind],
                                         position_embeddings=ctx["rope"], position_ids=ctx["positions"],
                                         cache=None, use_cache=False)

    def head(self, model, hidden):
        return model.lm_head(model.model.norm(hidden))

    def loss(self, model, logits, labels, label_smoothing=0.0):
        return causal_loss(model, logits, labels, label_smoothing)

    def head_modules(self, model):
        return [model.model.norm, model.lm_head]


class Bert(Family):
    """BertForSequenceClassification (MiniLM): bidirectional attention, pooler + classifier head."""

    name = "bert"
    matrix_paths = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                    "attn_out": "attention.output.dense", "ffn_in": "intermediate.dense", "ffn_out": "output.dense"}

    block_path = "bert.encoder.layer"

    def blocks(self, model):
        return model.bert.encoder.layer

    def embedding_modules(self, model):
        return [model.bert.embeddings]

    def embed(self, model, input_ids):
        return model.bert.embeddings(input_ids=input_ids)

    def context(self, model, hidden, attention_mask):
        return {"mask": create_bidirectional_mask(config=model.config, inputs_embeds=hidden,
                                                  attention_mask=attention_mask)}

    def run_block(self, model, index, hidden, ctx):
        return model.bert.encoder.layer[index](hidden, ctx["mask"], None, encoder_attention_mask=None, cache=None)

    def head(self, model, hidden):
        pooled = model.bert.pooler(hidden) if model.bert.pooler is not None else hidden[:, 0]
        return model.classifier(model.dropout(pooled))

    def loss(self, model, logits, labels, label_smoothing=0.0):
        return nn.functional.cross_entropy(logits.view(-1, model.config.num_labels), labels.view(-1),
                                           label_smoothing=label_smoothing)

    def head_modules(self, model):
        return [m for m in (model.bert.pooler, model.dropout, model.classifier) if m is not None]

    def trainable_head(self, model):
        return [model.classifier]


FAMILIES: dict[str, Family] = {"gpt2": GPT2(), "llama": Llama(), "qwen2": Llama(), "mistral": Llama(), "bert": Bert()}


def family_of(model: nn.Module) -> Family:
    kind = getattr(model.config, "model_type", None)
    if kind not in FAMILIES:
        raise ValueError(f"model_type {kind!r} cannot be split; supported: gpt2, llama, qwen2, mistral, bert")
    return FAMILIES[kind]
