"""FLOPs, transfer bytes and memory of one split-LoRA iteration, counted from the architecture alone.

Counting follows what autograd actually runs with a frozen base: a base linear map costs a backward matmul only
when its input needs a gradient, LoRA factors always get weight gradients, and attention matmuls get input
gradients only for operands that need them. `tests/test_costmodel.py` checks this against FlopCounterMode.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from hsplit_actors.costmodel.arch import DTYPE_BYTES, ModelArch
from hsplit_actors.costmodel.config import ClientConfig

ADAPTER_BYTES = 4  # LoRA factors are kept in fp32 whatever the base dtype
ADAM_COPIES = 4  # parameter, gradient, two Adam moments
MASK_BYTES = 1  # attention mask sent as bool
LABEL_BYTES = 8  # labels are int64


@dataclass(frozen=True)
class IterationCost:
    """What one local iteration of one client costs, split by where it runs."""

    client_fwd_flops: float
    client_bwd_flops: float
    server_flops: float  # server forward + loss + backward for this client's batch
    uplink_bytes: int  # activations + mask + labels
    downlink_bytes: int  # activation gradient
    adapter_params: int  # client-side trainable parameters (what FedAvg-style aggregation uploads)
    server_adapter_params: int
    client_memory_bytes: int
    server_frozen_bytes: int = 0  # base weights of the server's part (shared by every client on a GPU)
    server_activation_bytes: int = 0  # saved for backward while one job of this client runs
    # what the default timing model adds to FLOPs (timing/roofline.py): memory traffic and kernels per phase; the
    # server's weight traffic is paid once per batch, its activation traffic and FLOPs once per job
    client_fwd_bytes: float = 0.0
    client_bwd_bytes: float = 0.0
    server_weight_bytes: float = 0.0
    server_job_bytes: float = 0.0
    client_fwd_kernels: int = 0
    client_bwd_kernels: int = 0
    server_kernels: int = 0


@dataclass(frozen=True)
class _Pass:
    fwd: float
    bwd: float
    out_requires_grad: bool
    saved: float  # elements saved for backward (activation dtype) + mask bytes expressed in elements
    weights: float = 0.0  # frozen weight elements the pass reads (once forward, again backward when it runs)
    fwd_kernels: int = 0
    bwd_kernels: int = 0


# Kernels a block launches, as PyTorch runs the Hugging Face modules (counted from their forward code; the default
# timing model prices each at the device's launch_us, fitted to measured profiles): per linear map 1, per LoRA
# adapter 4 (A, B, scale, add); attention core 3 (scores, softmax, weighted sum) + 1 dropout; 2 norms, 2 residual
# adds, the activation (GELU 1, SiLU-gated 2), GPT-2 / BERT's 2 more dropouts, LLaMA's rotary embedding 6.
# Backward launches about twice the forward's kernels wherever a gradient flows, plus 2 weight-gradient matmuls per
# adapter. An optimiser step (AdamW, foreach) and zero_grad: OPTIMISER_KERNELS per trainable set.
LINEAR_KERNELS, LORA_KERNELS, OPTIMISER_KERNELS = 1, 4, 12


@lru_cache(maxsize=65536)
def _block_pass(arch: ModelArch, ranks: tuple[int, ...], batch: int, seq: int, x_rg: bool, dropout: bool) -> _Pass:
    """Forward/backward FLOPs of one block and the activations it saves, given whether its input needs grad.
    Cached: ARMSC's greedy search prices thousands of configurations that share most blocks' ranks."""
    tokens = batch * seq
    shape = {m: arch.matrix_shape(m) for m in arch.matrices}
    rank = dict(zip(arch.matrices, ranks, strict=True))
    fwd = bwd = saved = 0.0

    def linear(m: str, in_rg: bool) -> bool:
        nonlocal fwd, bwd, saved
        i, o = shape[m]
        r = rank[m]
        fwd += 2 * tokens * i * o
        if in_rg:
            bwd += 2 * tokens * i * o  # input gradient through the frozen weight
        if r:
            fwd += 2 * tokens * r * (i + o)
            bwd += 2 * tokens * r * (i + 2 * o) + (2 * tokens * i * r if in_rg else 0)
            saved += tokens * r  # x·A kept for dB
        return in_rg or r > 0

    attn_width = arch.n_heads * arch.head_dim
    scores = batch * arch.n_heads * seq * seq
    adapted = sum(1 for m in arch.matrices if rank[m])
    kernels = len(arch.matrices) * LINEAR_KERNELS + adapted * LORA_KERNELS + 3 + int(dropout) + 2 + 2
    kernels += (2 if arch.gated else 1) + (2 if dropout else 0) + (6 if arch.family == "llama" else 0)
    weights = float(sum(i * o for i, o in shape.values()))
    post_norm = arch.family == "bert"  # BERT normalises after each residual add; GPT-2 and LLaMA before
    # attention: LN1 input, then q/k/v
    if x_rg and not post_norm:
        saved += tokens * arch.hidden  # LayerNorm / RMSNorm input
    if any(rank[m] for m in ("query", "key", "value")):
        saved += tokens * arch.hidden  # LN output, the LoRA input shared by q/k/v
    q_rg, k_rg, v_rg = (linear(m, x_rg) for m in ("query", "key", "value"))
    fwd += 4 * scores * arch.head_dim
    s_rg = q_rg or k_rg
    attn_rg = s_rg or v_rg
    if attn_rg:
        saved += 3 * tokens * attn_width + scores  # Q, K, V and the softmax output
        if dropout:
            saved += scores / 4  # bool dropout mask, in units of fp32-ish elements (approximation)
    bwd += 2 * scores * arch.head_dim * (int(s_rg) + int(v_rg) + int(q_rg) + int(k_rg))
    if rank["attn_out"]:
        saved += tokens * attn_width
    o_rg = linear("attn_out", attn_rg)
    h1_rg = x_rg or o_rg
    # feed-forward
    if h1_rg:
        saved += tokens * arch.hidden  # second norm input (post-norm: the norm after the attention residual)
    if any(rank[m] for m in ("ffn_in", "ffn_gate") if m in rank):
        saved += tokens * arch.hidden
    in_rg = linear("ffn_in", h1_rg)
    mid_rg = in_rg
    if arch.gated:
        gate_rg = linear("ffn_gate", h1_rg)
        mid_rg = in_rg or gate_rg
        if mid_rg:
            saved += 3 * tokens * arch.ffn  # SiLU input and output, and the up projection, for the product
    elif mid_rg:
        saved += tokens * arch.ffn  # activation input
    if rank["ffn_out"]:
        saved += tokens * arch.ffn
    f_rg = linear("ffn_out", mid_rg)
    # Measured on the HF implementations with saved_tensors_hooks (tests/test_costmodel.py): in train mode the
    # dropout-bearing families (GPT-2, BERT) keep ~5 more hidden-sized tensors per block (dropout outputs and
    # residual sums), and GPT-2's tanh-GELU, a composite of elementwise ops, keeps three more FFN-sized ones.
    if dropout:
        saved += tokens * arch.hidden * (2 * int(attn_rg) + 2 * int(h1_rg) + int(f_rg))
    if arch.family == "gpt2" and mid_rg:
        saved += 3 * tokens * arch.ffn
    if post_norm and (h1_rg or f_rg):
        saved += tokens * arch.hidden  # the norm after the FFN residual
    grads = h1_rg or f_rg or adapted > 0
    return _Pass(fwd, bwd, h1_rg or f_rg, saved, weights, kernels, 2 * (kernels + adapted) if grads else 0)


def _head_pass(arch: ModelArch, batch: int, seq: int, x_rg: bool) -> _Pass:
    """Final norm + LM head (all tokens) or pooler + classifier (first token only; classifier trainable)."""
    tokens = batch * seq
    if arch.task == "classification":  # (BERT's pooler: linear + tanh) dropout, classifier, loss
        pool = 2 * batch * arch.hidden * arch.hidden if arch.family == "bert" else 0
        cls = 2 * batch * arch.hidden * arch.num_labels
        bwd = cls + (cls + pool if x_rg else 0)  # classifier weight grad always; input grads if needed
        weights = arch.hidden * arch.num_labels + (arch.hidden * arch.hidden if arch.family == "bert" else 0)
        return _Pass(pool + cls, bwd, True, batch * arch.hidden, weights, 6, 12)
    lm = 2 * tokens * arch.hidden * arch.vocab  # final norm, LM head, loss
    saved = tokens * arch.hidden + tokens * arch.vocab if x_rg else 0  # final-norm input, log-softmax for the loss
    return _Pass(lm, lm if x_rg else 0.0, x_rg, saved, arch.hidden * arch.vocab, 5, 10 if x_rg else 0)


def _trainable_head_params(arch: ModelArch) -> int:
    return arch.hidden * arch.num_labels + arch.num_labels if arch.task == "classification" else 0


@lru_cache(maxsize=64)
def _widths(arch: ModelArch) -> tuple[int, ...]:
    """in + out features of each adaptable matrix (a rank-r adapter has r times this many parameters)."""
    return tuple(sum(arch.matrix_shape(m)) for m in arch.matrices)


@lru_cache(maxsize=4096)
def iteration_cost(
    arch: ModelArch, config: ClientConfig, batch: int, seq: int, dtype: str = "float32"
) -> IterationCost:
    """Cost of one iteration for `config`; cached, so a fleet of 100k clients costs one call per distinct config."""
    k, n = config.split_point, arch.n_layers
    if not 0 <= k <= n:
        raise ValueError(f"split_point {k} outside 0..{n}")
    dropout = arch.family in ("gpt2", "bert")
    act_bytes = DTYPE_BYTES[dtype]
    tokens = batch * seq

    client_fwd = client_bwd = client_saved = 0.0
    rg = False  # embeddings are frozen: nothing upstream of block 1 needs a gradient
    client_passes: list[_Pass] = []
    for b in range(k):
        p = _block_pass(arch, config.ranks[b], batch, seq, rg, dropout)
        client_fwd, client_bwd, client_saved = client_fwd + p.fwd, client_bwd + p.bwd, client_saved + p.saved
        client_passes.append(p)
        rg = p.out_requires_grad
    server = server_saved = 0.0
    server_passes: list[_Pass] = []
    if k == n:
        h = _head_pass(arch, batch, seq, rg)
        client_fwd, client_bwd, client_saved = client_fwd + h.fwd, client_bwd + h.bwd, client_saved + h.saved
        client_passes.append(h)
    else:
        rg = k > 0  # the server needs dL/dh to send back, unless it holds the whole model
        for b in range(k, n):
            p = _block_pass(arch, config.ranks[b], batch, seq, rg, dropout)
            server += p.fwd + p.bwd
            server_saved += p.saved
            server_passes.append(p)
            rg = p.out_requires_grad
        h = _head_pass(arch, batch, seq, rg)
        server += h.fwd + h.bwd
        server_saved += h.saved
        server_passes.append(h)

    width = _widths(arch)

    def adapter_params(blocks: range) -> int:
        return sum(r * w for b in blocks for r, w in zip(config.ranks[b], width, strict=True))

    head = _trainable_head_params(arch)
    client_params = adapter_params(range(k)) + (head if k == n else 0)
    server_params = adapter_params(range(k, n)) + (head if k < n else 0)
    split = 0 < k < n
    label_elems = batch if arch.task == "classification" else tokens
    up = tokens * arch.hidden * act_bytes + tokens * MASK_BYTES + label_elems * LABEL_BYTES if split else 0
    down = tokens * arch.hidden * act_bytes if split else 0
    frozen = (arch.embedding_params + k * arch.block_params + (arch.head_params if k == n else 0)) if k else 0
    memory = frozen * act_bytes + client_params * ADAPTER_BYTES * ADAM_COPIES + client_saved * act_bytes
    server_frozen = 0 if k == n else (
        (n - k) * arch.block_params + arch.head_params + (arch.embedding_params if k == 0 else 0)
    )
    # the default timing model's memory traffic: weights read per pass (again backward), activations written forward
    # and read backward; and its kernel counts (embedding lookup, position add, norm, dropout: 5; an optimiser step
    # where the side trains anything)
    def traffic(passes: list[_Pass], backward: bool) -> float:
        return sum((p.weights if (not backward or p.bwd_kernels) else 0.0) * act_bytes + 2 * p.saved * act_bytes
                   for p in passes)

    embed_kernels = 5 if k else 0
    client_bwd_kernels = sum(p.bwd_kernels for p in client_passes)
    client_bwd_kernels += OPTIMISER_KERNELS if client_params else 0
    return IterationCost(
        client_fwd_bytes=traffic(client_passes, False), client_bwd_bytes=traffic(client_passes, True),
        client_fwd_kernels=embed_kernels + sum(p.fwd_kernels for p in client_passes),
        client_bwd_kernels=client_bwd_kernels,
        server_weight_bytes=sum(p.weights * (2 if p.bwd_kernels else 1) for p in server_passes) * act_bytes,
        server_job_bytes=sum(4 * p.saved for p in server_passes) * act_bytes,
        server_kernels=sum(p.fwd_kernels + p.bwd_kernels for p in server_passes)
        + (OPTIMISER_KERNELS if server_params else 0) + (5 if k == 0 and k < n else 0),
        client_fwd_flops=client_fwd, client_bwd_flops=client_bwd, server_flops=server,
        uplink_bytes=int(up), downlink_bytes=int(down), adapter_params=client_params,
        server_adapter_params=server_params, client_memory_bytes=int(memory),
        server_frozen_bytes=int(server_frozen * act_bytes), server_activation_bytes=int(server_saved * act_bytes),
    )

