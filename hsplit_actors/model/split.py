"""Cut a Hugging Face model at block k: the client part (embeddings + blocks 1..k) and the server part (blocks
k+1..L, final norm, head). Both share the original modules; each owns exactly its modules, so `parameters()` and
an optimizer see only its side. The 2-D attention mask travels with the activations and each side rebuilds its
own causal / bidirectional mask and positions from it.
"""

from __future__ import annotations

import torch
from torch import nn

from hsplit_actors.model.families import Family, family_of


class _Part(nn.Module):
    def __init__(self, model: nn.Module, family: Family, blocks: range, modules: list[nn.Module]):
        super().__init__()
        object.__setattr__(self, "whole", model)  # not registered: a part owns only `owned`
        self.family = family
        self.block_range = blocks
        self.owned = nn.ModuleList(modules)

    def _blocks(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        ctx = self.family.context(self.whole, hidden, attention_mask)
        for index in self.block_range:
            hidden = self.family.run_block(self.whole, index, hidden, ctx)
        return hidden


class ClientPart(_Part):
    """Embeddings and blocks 1..k; with k = L also the head (federated: everything on the device)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self._blocks(self.family.embed(self.whole, input_ids), attention_mask)
        if self.block_range.stop == len(self.family.blocks(self.whole)):
            return self.family.head(self.whole, hidden)
        return hidden


class ServerPart(_Part):
    """Blocks k+1..L, final norm and head: activations in, logits out."""

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.family.head(self.whole, self._blocks(hidden, attention_mask))


class SplitModel:
    """A model cut at `split_point` (1 <= k <= L). `client` and `server` are the two parts (`server` is None
    when k = L); `step` runs one split iteration with the two-part backward of SPEC §1."""

    def __init__(self, model: nn.Module, split_point: int, label_smoothing: float = 0.0):
        self.model = model
        self.label_smoothing = label_smoothing  # of the training loss (`loss`); evaluation never smooths
        self.family = family_of(model)
        self.family.prepare(model)
        layers = len(self.family.blocks(model))
        if not 1 <= split_point <= layers:
            raise ValueError(f"split point {split_point} is out of range: this model has {layers} blocks, so use "
                             f"1..{layers} ({layers} = federated, the whole model on the client)")
        self.split_point, self.n_layers = split_point, layers
        blocks = self.family.blocks(model)
        head = self.family.head_modules(model)
        client_modules = self.family.embedding_modules(model) + list(blocks[:split_point])
        if split_point == layers:
            client_modules += head
        self.client = ClientPart(model, self.family, range(split_point), client_modules)
        self.server = None if split_point == layers else ServerPart(
            model, self.family, range(split_point, layers), list(blocks[split_point:]) + head)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Forward through both parts (evaluation and generation use this; nothing is re-assembled)."""
        out = self.client(input_ids, attention_mask)
        return out if self.server is None else self.server(out, attention_mask)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.family.loss(self.model, logits, labels, self.label_smoothing)

    def step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> float:
        """One iteration's forward and backward, as the protocol runs it: the client sends h, the server computes
        the loss and returns dL/dh, the client back-propagates it. Gradients accumulate on both parts."""
        if self.server is None:
            loss = self.loss(self.client(input_ids, attention_mask), labels)
            loss.backward()
            return float(loss.detach())
        hidden = self.client(input_ids, attention_mask)
        received = hidden.detach().requires_grad_(True)  # what arrives at the server
        loss = self.loss(self.server(received, attention_mask), labels)
        loss.backward()
        hidden.backward(received.grad)  # the activation gradient sent back down
        return float(loss.detach())
