"""The state that real training keeps resident: client hosts (many virtual clients each: adapters, optimiser,
data cursor) and the server host (server-side parts, per-client or shared server adapters). Plain classes, so
they run in-process or as Ray actors (`actors.py`) unchanged.

Every computation is seeded by (run seed, client, round, iteration), and every host uses the same number of
threads, so results do not depend on which host or how many hosts ran them.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from hsplit_actors.data.datasets import IGNORE, Encoded
from hsplit_actors.metrics import evaluate
from hsplit_actors.model.factors import Key, LoRAFactors
from hsplit_actors.model.split import SplitModel
from hsplit_actors.training.importance import ImportanceProbe
from hsplit_actors.training.recipe import Recipe
from hsplit_actors.training.slots import Adapter, Slots

Factors = dict[Key, LoRAFactors]


@dataclass(frozen=True)
class HostSetup:
    """What every host needs to know, identical on all of them."""

    seed: int
    batch_size: int
    client: Recipe  # how device-side sets step (training/recipe.py)
    server: Recipe  # how server-side sets step
    threads: int
    keys: tuple[Key, ...]  # every (block, matrix) any participant adapts
    recompute: bool = False  # client forward without graph, recomputed at backward
    label_smoothing: float = 0.0  # of the training loss
    eval_threads: int | None = None  # the server host's threads while it evaluates (None: every core)


@dataclass
class ModelRecipe:
    """How to build the (frozen) model skeleton; the weights come from `base_state`, shared, not copied."""

    config: object
    task: str
    tied: dict[str, str] = field(default_factory=dict)  # a weight not shipped -> the one it is (setup.py)


def build_model(recipe: ModelRecipe, base_state: dict[str, np.ndarray] | dict[str, torch.Tensor]) -> nn.Module:
    """The frozen model of a host, its weights those shared in the object store. Built without initialising
    weights that are replaced at once: random initialisation was nearly all of a build (0.26 of 0.27 s for
    MiniLM, 17 s for GPT-2 large, on 2 cores), on every host, on start-up's critical path; nor copying them
    (GPT-2's Conv1D matrices laid out as Linear: 3.3 s for GPT-2 large)."""
    from transformers.initialization import no_init_weights

    from hsplit_actors.model.families import family_of
    from hsplit_actors.model.loading import _model_class, _quiet_transformers

    with _quiet_transformers(), no_init_weights():
        model = _model_class(recipe.task).from_config(recipe.config, dtype=torch.float32)
        family_of(model).prepare(model, copy_weights=False)  # views, replaced just below
    state = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in base_state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)  # points at the shared weights
    if set(missing) - set(recipe.tied) or unexpected:
        raise RuntimeError(f"the shared weights do not fit the model: missing {missing}, unexpected {unexpected}")
    for name, source in recipe.tied.items():  # one tensor again under both names, so `.to(device)` moves it once
        owner, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(owner), attribute, _tensor_named(model, source))
    for p in model.parameters():
        p.requires_grad_(False)
    return model.train()


def _tensor_named(model: nn.Module, name: str) -> torch.Tensor:
    try:
        return model.get_parameter(name)
    except AttributeError:
        return model.get_buffer(name)


def encoded(arrays: dict[str, np.ndarray], device: torch.device | str = "cpu") -> Encoded:
    """A data set shipped as numpy arrays (zero-copy from the object store) as tensors."""
    return Encoded(*(torch.from_numpy(np.asarray(arrays[k])).to(device)
                     for k in ("input_ids", "attention_mask", "labels")))


def reported(loss: torch.Tensor, labels: torch.Tensor) -> float | None:
    """A step's loss for the rounds table; None when its batch has no token to predict (every label ignored: E2E
    prompts that fill seq_len), whose mean over no token is NaN (its gradient is zero)."""
    return float(loss.detach()) if bool((labels != IGNORE).any()) else None


def step_seed(*parts: int) -> int:
    """A seed that depends only on what is computed (run seed, client, round, iteration, side)."""
    digest = hashlib.blake2b(np.array(parts, dtype=np.int64).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def _clone_parameters(factors: Factors, keys, device: torch.device | str = "cpu") -> dict[Key, Adapter]:
    return {k: Adapter(nn.Parameter(factors[k].A.to(device, copy=True)),
                       nn.Parameter(factors[k].B.to(device, copy=True)), factors[k].alpha)
            for k in keys if k in factors}


def _clone_head(head: dict[str, torch.Tensor] | None, device: torch.device | str = "cpu") -> dict[str, nn.Parameter]:
    return {name: nn.Parameter(t.to(device, copy=True)) for name, t in (head or {}).items()}


@dataclass
class AdapterState:
    """One trainable set (a client's, a server copy, or the shared server set) with its optimiser. `steps` is the
    owner's position in the schedule: it carries over when the set is rebuilt (training/recipe.py)."""

    adapters: dict[Key, Adapter]
    head: dict[str, nn.Parameter]
    recipe: Recipe
    steps: int = 0
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        params = self.parameters()
        self.optimizer = torch.optim.AdamW(params, lr=self.recipe.lr, weight_decay=self.recipe.weight_decay) \
            if params else None

    def parameters(self) -> list[nn.Parameter]:
        return [p for a in self.adapters.values() for p in (a.A, a.B)] + list(self.head.values())

    def step(self) -> None:
        """One optimiser step at the schedule's rate for this owner's step count (clipped first, if asked)."""
        if self.optimizer is not None:
            if self.recipe.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.parameters(), self.recipe.max_grad_norm)
            rate = self.recipe.rate(self.steps)
            for group in self.optimizer.param_groups:
                group["lr"] = rate
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1

    def export(self) -> tuple[Factors, dict[str, torch.Tensor]]:
        """On the CPU, whatever device trains them: exports travel between hosts and into checkpoints."""
        factors = {k: LoRAFactors(a.A.detach().cpu().clone(), a.B.detach().cpu().clone(), a.alpha)
                   for k, a in self.adapters.items()}
        return factors, {n: p.detach().cpu().clone() for n, p in self.head.items()}

    def assign(self, factors: Factors, head: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, a in self.adapters.items():
                a.assign(factors[k])
            for n, p in self.head.items():
                p.copy_(head[n])

    def same_shapes(self, factors: Factors, head: dict[str, torch.Tensor] | None) -> bool:
        """Whether `factors` (and `head`) fit these parameters as they are (then the optimiser can stay)."""
        return (set(self.adapters) == set(factors) and set(self.head) == set(head or {})
                and all(a.A.shape == factors[k].A.shape and a.alpha == factors[k].alpha
                        for k, a in self.adapters.items()))

    def state_dict(self) -> dict:
        """A copy (the optimiser's own state dict shares tensors that later steps change in place)."""
        optimizer = copy.deepcopy(self.optimizer.state_dict()) if self.optimizer else None
        return {"factors": self.export(), "optimizer": optimizer, "steps": self.steps}

    @classmethod
    def from_state_dict(cls, state: dict, recipe: Recipe, device: torch.device | str = "cpu") -> AdapterState:
        factors, head = state["factors"]
        new = cls(_clone_parameters(factors, factors, device), _clone_head(head, device), recipe,
                  state.get("steps", 0))
        if new.optimizer is not None:
            new.optimizer.load_state_dict(state["optimizer"])
        return new


def load_state(current: AdapterState | None, factors: Factors, head: dict[str, torch.Tensor] | None,
               recipe: Recipe, keep_optimizer: bool, device: torch.device | str = "cpu",
               steps: int | None = None) -> AdapterState:
    """A round's starting adapters: assigned in place (optimiser state kept) when allowed and the shapes match,
    otherwise a new set with a new optimiser (new ranks, or a method that restarts adapters each round). Either
    way the schedule goes on from the owner's step count (`steps`, default: `current`'s)."""
    if steps is None:
        steps = current.steps if current is not None else 0
    if keep_optimizer and current is not None and current.same_shapes(factors, head):
        current.assign(factors, head or {})
        current.steps = steps
        return current
    return AdapterState(_clone_parameters(factors, factors, device), _clone_head(head, device), recipe, steps)


@dataclass
class VirtualClient:
    cid: int
    split_point: int
    indices: np.ndarray
    state: AdapterState
    cursor: int = 0
    epoch: int = 0
    order: np.ndarray | None = None
    regulariser: tuple[float, int] | None = None  # (weight, first tail rank): HetLoRA's self-pruning penalty
    version: int = 0  # the global version it computes on

    def penalty(self) -> torch.Tensor | float:
        """`weight * sum ||s B[:, t:] A[t:]||_F` over the client's adapters (0 without a regulariser)."""
        if self.regulariser is None:
            return 0.0
        weight, start = self.regulariser
        return weight * sum((a.scale * (a.B[:, start:] @ a.A[start:])).norm() for a in self.state.adapters.values())

    def next_batch(self, batch_size: int, seed: int) -> np.ndarray:
        """The next `batch_size` of this client's samples; reshuffled (seeded) every epoch."""
        if not len(self.indices):
            raise RuntimeError(f"client {self.cid} holds no samples")  # partitions give each client one: a bug
        taken = []
        while len(taken) < batch_size:
            if self.order is None or self.cursor >= len(self.order):
                rng = np.random.default_rng([seed, self.cid, self.epoch])
                self.order, self.cursor, self.epoch = rng.permutation(self.indices), 0, self.epoch + 1
            take = self.order[self.cursor:self.cursor + batch_size - len(taken)]
            taken.extend(take.tolist())
            self.cursor += len(take)
        return np.array(taken)


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; platform's name elsewhere)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def device_info(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU: {cpu_model()}"
    return {"device": name, "torch": str(torch.__version__), "cuda": torch.version.cuda,  # a TorchVersion would
            # make whoever unpickles it (the driver, which reads meta) import torch
            "threads": torch.get_num_threads()}


class _Host:
    device = torch.device("cpu")
    versioned = True  # keeps one base per global version in use (client hosts); the server only the newest

    def __init__(self, recipe: ModelRecipe, base_state, setup: HostSetup):
        torch.set_num_threads(setup.threads)
        self.setup = setup
        self.model = build_model(recipe, base_state).to(self.device)
        self.slots = Slots(self.model, list(setup.keys))
        self._splits: dict[int, SplitModel] = {}
        self.busy: dict[str, float] = {}  # seconds spent per method, for "where does the time go"
        self.startup: dict[str, float] = {}  # its actor's start (HostActor fills it); empty in-process
        self.merged: dict[Key, torch.Tensor] = {}  # sum of every aggregate folded into the base (fp64)
        self.original: dict[Key, torch.Tensor] = {}  # the shared base weight of each merged matrix
        self.bases: dict[int, dict[Key, nn.Parameter]] = {}  # per global version: its merged matrices
        self.latest, self.using, self.peak_base_bytes = 0, None, 0
        self.scores: dict[int, dict[Key, list[float]]] = {}  # IWI: per client, per matrix, this round

    def merge(self, stacked: Factors, version: int, live: list[int]) -> None:
        """Fold an aggregate `B @ A` into this host's frozen base (NAA / FLoRA), making `version`. The shared
        weight is never written: each version's merged matrices are private copies (one per host, not per
        client), built as base + the fp64 sum of every aggregate so far. Versions not in `live` are dropped."""
        self._accumulate(stacked)
        self._materialise(version)
        self._keep(set(live) | {version})

    def _accumulate(self, stacked: Factors) -> None:
        for key, f in stacked.items():
            delta = f.scale * (f.B.to(self.device, torch.float64) @ f.A.to(self.device, torch.float64))
            self.merged[key] = self.merged[key] + delta if key in self.merged else delta

    def _materialise(self, version: int) -> None:
        """The base weights of `version`: the shared original plus everything merged up to it."""
        weights = {}
        for key, merged in self.merged.items():
            base = self.slots.modules[key].get_base_layer()
            if key not in self.original:
                self.original[key] = base.weight
            original = self.original[key]
            weights[key] = nn.Parameter((original.to(torch.float64) + merged).to(original.dtype), requires_grad=False)
        self.bases[version] = weights
        self.latest = version
        self.peak_base_bytes = max(self.peak_base_bytes, self.base_bytes())

    def _keep(self, versions: set[int]) -> None:
        if not self.versioned:  # the server side is always the newest version
            versions = {self.latest}
        for v in [v for v in self.bases if v not in versions]:
            del self.bases[v]
        self.using = None

    def peak_base_memory(self) -> int:
        """The most bytes of per-version base weights this host held at once."""
        return self.peak_base_bytes

    def base_bytes(self) -> int:
        return sum(w.numel() * w.element_size() for ws in self.bases.values() for w in ws.values())

    def use_version(self, version: int) -> None:
        """Compute on `version`'s base from here on: the frozen weights are swapped by pointer, so a graph built
        on another version keeps the tensors it saved."""
        if not self.versioned:
            version = self.latest
        if version == self.using or not self.original:
            return
        weights = self.bases.get(version, {})
        if version != 0 and version not in self.bases:
            raise RuntimeError(f"this host holds no base for version {version} (it keeps {sorted(self.bases)})")
        for key, original in self.original.items():
            self.slots.modules[key].get_base_layer().weight = weights.get(key, original)
        self.using = version

    def replay_merges(self, merges: list[tuple[int, Factors]], versions: set[int]) -> None:
        """The bases of `versions` as they are after `merges` ((version, aggregate) pairs, in order), whatever
        this host held: recomputed exactly as `merge` did it, so a restored host equals one that never stopped.
        The coordinator keeps the (low-rank) merges, so snapshots never carry dense merged matrices."""
        self.merged, self.bases, self.using = {}, {}, None
        self.latest = 0
        newest = merges[-1][0] if merges else 0
        for version, stacked in merges:
            self._accumulate(stacked)
            if version in versions or version == newest or not self.versioned:
                self._materialise(version)
        self._keep(set(versions) | {newest})

    def probe(self, cid: int, blocks: range, embeddings: bool) -> ImportanceProbe:
        return self._probe([(slice(None), self.scores.setdefault(cid, {}))], blocks, embeddings)

    def probe_batch(self, cids: list[int], sizes: list[int], blocks: range, embeddings: bool,
                    scored: list[bool]) -> ImportanceProbe:
        """A probe over a batch of several clients' rows: each client in `scored` scored on its own rows."""
        ends = np.cumsum([0, *sizes])
        return self._probe([(slice(int(a), int(b)), self.scores.setdefault(c, {}))
                            for c, a, b, on in zip(cids, ends[:-1], ends[1:], scored, strict=True) if on],
                           blocks, embeddings)

    def _probe(self, parts: list, blocks: range, embeddings: bool) -> ImportanceProbe:
        from hsplit_actors.model.families import family_of

        modules = family_of(self.model).embedding_modules(self.model) if embeddings else None
        return ImportanceProbe(self.slots.modules, blocks, parts, modules)

    def importance(self, cids: list[int]) -> dict[int, dict[Key, float]]:
        """This round's mean score per matrix for each of `cids`, then forgotten."""
        out = {c: {k: float(np.mean(v)) for k, v in self.scores.pop(c, {}).items()} for c in cids}
        return {c: s for c, s in out.items() if s}

    def timed(self, method: str, start: float) -> None:
        self.busy[method] = self.busy.get(method, 0.0) + time.perf_counter() - start

    def busy_seconds(self) -> dict[str, float]:
        return dict(self.busy)

    def _blocks(self):
        from hsplit_actors.model.families import family_of

        return family_of(self.model).blocks(self.model)

    def split(self, k: int) -> SplitModel:
        k = k or len(self._blocks())  # k = 0 (centralised): the whole model on the server
        if k not in self._splits:
            self._splits[k] = SplitModel(self.model, k, self.setup.label_smoothing)
        return self._splits[k]

    def ping(self) -> bool:
        return True

    def startup_times(self) -> dict[str, float]:
        """Where this host's actor spent its start (importing, waiting for the shared assets, building its model);
        empty for an in-process host."""
        return dict(self.startup)

    def device_info(self) -> dict:
        """Where this host computes: the device (CUDA name, or the CPU model), torch and CUDA versions, threads."""
        return device_info(self.device)

    def node(self) -> str:
        """The Ray node this host runs on ("local" outside Ray)."""
        try:
            import ray

            return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
        except Exception:  # noqa: BLE001 - outside an actor there is no context
            return "local"


class ClientHost(_Host):
    """Hosts many virtual clients on one model; their state stays here between rounds."""

    def __init__(self, recipe: ModelRecipe, base_state, setup: HostSetup, train: dict[str, np.ndarray]):
        super().__init__(recipe, base_state, setup)
        self.data = encoded(train)
        self.clients: dict[int, VirtualClient] = {}
        self.pending: dict[int, torch.Tensor] = {}
        self.batches: dict[int, tuple] = {}  # the batch of each forward whose backward has not run yet

    def load_client(self, cid: int, split_point: int, indices: np.ndarray | None, factors: Factors,
                    head: dict[str, torch.Tensor] | None, keep_optimizer: bool = True,
                    regulariser: tuple[float, int] | None = None, version: int = 0) -> None:
        """A session's start on a new version: the client's split point and device-side adapters (registered on
        first use; its data cursor stays across sessions)."""
        federated = split_point == len(self._blocks())
        own = {k: f for k, f in factors.items() if k[0] < split_point}
        own_head = head if federated else None
        vc = self.clients.get(cid)
        if vc is None:
            vc = VirtualClient(cid, split_point, np.asarray(indices), None)
            self.clients[cid] = vc
        vc.state = load_state(vc.state if vc.split_point == split_point else None, own, own_head,
                              self.setup.client, keep_optimizer, steps=vc.state.steps if vc.state else 0)
        vc.split_point, vc.regulariser, vc.version = split_point, regulariser, version

    def forward(self, cid: int, rnd: int, it: int, calibrate: bool = False, after: object = None):
        """Client forward of the next batch: the payload for the server, or (federated) nothing. `after` is the
        client's previous step's result, passed only as a dependency: client actors run whichever virtual
        client's work is ready (out of order), and this keeps each client's own steps in order."""
        start = time.perf_counter()
        try:
            self.use_version(self.clients[cid].version)  # before a probe reads the base weights
            if calibrate:
                with self.probe(cid, range(self.clients[cid].split_point), embeddings=True):
                    return self._forward(cid, rnd, it)
            return self._forward(cid, rnd, it)
        finally:
            self.timed("client_forward", start)

    def _forward(self, cid: int, rnd: int, it: int):
        vc = self.clients[cid]
        ids, mask, labels = self.data.take(vc.next_batch(self.setup.batch_size, self.setup.seed))
        if vc.split_point == 0:  # centralised: the data itself goes to the server
            return ids, mask, labels
        self.batches[cid] = (ids, mask, labels, rnd, it)  # what a capture mid-iteration keeps (no graph)
        self.slots.load(vc.state.adapters, vc.state.head)
        self.use_version(vc.version)
        torch.manual_seed(step_seed(self.setup.seed, cid, rnd, it, 0))
        split = self.split(vc.split_point)
        if self.setup.recompute and split.server is not None:
            with torch.no_grad():
                out = split.client(ids, mask)
            self.pending[cid] = self.batches[cid]  # the batch, not the graph
            return out, mask, labels
        out = split.client(ids, mask)
        if split.server is None:
            self.pending[cid] = split.loss(out, labels)
            return None
        self.pending[cid] = out
        return out.detach(), mask, labels

    def backward(self, cid: int, rnd: int, it: int, grad: torch.Tensor | None = None,
                 calibrate: bool = False, after: object = None) -> float | None:
        """Back-propagate the returned activation gradient (or, federated, the local loss); optimiser step.
        `after`: the forward's result when no gradient comes back (federated), only as a dependency."""
        start = time.perf_counter()
        try:
            self.use_version(self.clients[cid].version)
            if calibrate and self.setup.recompute:  # the forward that keeps a graph runs here
                with self.probe(cid, range(self.clients[cid].split_point), embeddings=True):
                    return self._backward(cid, rnd, it, grad)
            return self._backward(cid, rnd, it, grad)
        finally:
            self.timed("client_backward", start)

    def _backward(self, cid: int, rnd: int, it: int, grad: torch.Tensor | None) -> float | None:
        vc = self.clients[cid]
        if vc.split_point == 0:
            return None
        out = self.pending.pop(cid)
        batch = self.batches.pop(cid, None)
        if isinstance(out, tuple):  # recompute the forward, with its graph, exactly as it ran (same seed)
            ids, mask, labels, rnd_, it_ = out
            self.slots.load(vc.state.adapters, vc.state.head)
            self.use_version(vc.version)
            torch.manual_seed(step_seed(self.setup.seed, cid, rnd_, it_, 0))
            split = self.split(vc.split_point)
            out = split.client(ids, mask)
            if split.server is None:
                out = split.loss(out, labels)
        if grad is None:
            (out + vc.penalty()).backward()
            loss = reported(out, batch[2])
        else:
            if out.requires_grad:  # a device whose budget holds no adapter only runs the frozen forward
                out.backward(grad)
            loss = None
        vc.state.step()
        return loss

    def export(self, cids: list[int]) -> dict[int, tuple[Factors, dict[str, torch.Tensor]]]:
        return {c: self.clients[c].state.export() for c in cids}

    def snapshot(self, cids: list[int]) -> dict[int, dict]:
        """The state of `cids` (those it holds), enough to rebuild them from nothing (after a restart, on resume),
        including a forward whose backward is still to come (its batch: the graph is recomputed) and this
        session's importance scores."""
        wanted = set(cids)
        return {c: {"split_point": vc.split_point, "indices": vc.indices, "state": vc.state.state_dict(),
                    "cursor": vc.cursor, "epoch": vc.epoch, "order": vc.order, "regulariser": vc.regulariser,
                    "version": vc.version, "pending": self.batches.get(c),
                    "scores": copy.deepcopy(self.scores.get(c))}
                for c, vc in self.clients.items() if c in wanted}

    def restore(self, clients: dict[int, dict], merges: list, live: tuple[int, ...] = ()) -> None:
        """The captured clients, and the bases of every version still in use: the restored clients' and `live`
        (the coordinator's versions that sessions still compute on: a session begun after the capture, replayed
        now, may need one no restored client holds)."""
        self.pending.clear()
        self.batches.clear()
        self.scores.clear()
        self.clients = {}  # exactly the captured ones: a client first seen after the capture starts anew
        for c, s in clients.items():
            self._adopt(c, s)
        self.replay_merges(merges, {vc.version for vc in self.clients.values()} | set(live))

    def _adopt(self, c: int, s: dict) -> None:
        state = AdapterState.from_state_dict(s["state"], self.setup.client)
        self.clients[c] = VirtualClient(c, s["split_point"], s["indices"], state, s["cursor"], s["epoch"],
                                        s["order"], s["regulariser"], s["version"])
        if s["pending"] is not None:
            self.pending[c] = self.batches[c] = s["pending"]
        if s["scores"]:
            self.scores[c] = copy.deepcopy(s["scores"])

    def emigrate(self, cid: int, after: object = None) -> dict:
        """A client's whole state, which leaves this host for a less loaded one (between two of its iterations;
        `after`, its last step here, only as a dependency)."""
        state = self.snapshot([cid])[cid]
        del self.clients[cid]
        self.scores.pop(cid, None)
        return state

    def immigrate(self, cid: int, state: dict) -> None:
        """A client moved here from another host, exactly as it was there (the merged bases are every host's)."""
        self._adopt(cid, state)


class ServerHost(_Host):
    """Server-side parts: one adapter set per client (SFL-V1) or one shared set (SFL-V2 / SplitLoRA). On a GPU
    when the process has one (the Ray server actor asks for one when the cluster has any); activations arrive
    and gradients leave on the CPU. The server side always computes on the newest version of the base."""

    versioned = False

    def __init__(self, recipe: ModelRecipe, base_state, setup: HostSetup, shared: bool,
                 test: dict[str, np.ndarray]):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        super().__init__(recipe, base_state, setup)
        self.shared = shared
        self.states: dict[int, AdapterState] = {}
        self.split_points: dict[int, int] = {}
        self.test = encoded(test, self.device)

    def load_client(self, cid: int, split_point: int, factors: Factors, head: dict[str, torch.Tensor] | None,
                    keep_optimizer: bool = True) -> None:
        """A round's start: the server-side adapters for `cid` (its own set, or the shared one)."""
        self.split_points[cid] = split_point
        owner = -1 if self.shared else cid
        if split_point == len(self._blocks()):
            if not self.shared:
                self.states.pop(owner, None)
            return
        own = {k: f for k, f in factors.items() if k[0] >= split_point or self.shared}
        self.states[owner] = load_state(self.states.get(owner), own, head, self.setup.server, keep_optimizer,
                                        self.device)

    def load_shared(self, factors: Factors, head: dict[str, torch.Tensor] | None, keep_optimizer: bool) -> None:
        """The shared server set: at the start (every method that has one), and, for a method that restarts its
        adapters (HSplitLoRA), fresh after each aggregation."""
        self.states[-1] = load_state(self.states.get(-1), factors, head, self.setup.server, keep_optimizer,
                                     self.device)

    def register(self, cid: int, split_point: int) -> None:
        """Where `cid` splits this round (its server side is the shared set)."""
        self.split_points[cid] = split_point

    def state_of(self, cid: int) -> AdapterState:
        return self.states[-1 if self.shared else cid]

    def step(self, cid: int, rnd: int, it: int, payload, calibrate: bool = False) -> tuple[torch.Tensor | None, float]:
        """Server forward, loss, backward and adapter step for one client's activations (in submission order)."""
        start = time.perf_counter()
        try:
            self.use_version(self.latest)
            if calibrate:  # the server scores the blocks after this client's split, on the client's behalf
                k = self.split_points[cid]
                with self.probe(cid, range(k, len(self._blocks())), embeddings=k == 0):
                    return self._step(cid, rnd, it, payload)
            return self._step(cid, rnd, it, payload)
        finally:
            self.timed("server_step", start)

    def _step(self, cid: int, rnd: int, it: int, payload) -> tuple[torch.Tensor | None, float | None]:
        hidden, mask, labels = (t.to(self.device) for t in payload)
        k = self.split_points[cid]
        state = self.state_of(cid)
        self.slots.load(state.adapters, state.head)
        self.use_version(self.latest)
        torch.manual_seed(step_seed(self.setup.seed, cid, rnd, it, 1))
        split = self.split(k)
        if k == 0:
            loss = split.loss(split.client(hidden, mask), labels)
            loss.backward()
            state.step()
            return None, reported(loss, labels)
        received = hidden.detach().requires_grad_(True)
        loss = split.loss(split.server(received, mask), labels)
        loss.backward()
        state.step()
        return received.grad.cpu(), reported(loss, labels)

    def step_batch(self, jobs: list[tuple[int, int, int]], calibrate: list[bool], *payloads) -> tuple:
        """Several clients' jobs ((client, session number, iteration), all of one split point) on the shared
        server set as one batch: one forward and backward over the concatenated activations, the loss the sum of
        each job's own mean loss (so each job's activation gradient, and the adapters' gradient, are what the jobs
        would give one by one, summed), then **one** optimiser step. Dropout draws from the first job's seed.
        Returns each job's activation gradient, then each job's loss (flat: one Ray return per value)."""
        start = time.perf_counter()
        try:
            self.use_version(self.latest)
            cids = [c for c, _, _ in jobs]
            sizes = [int(p[0].shape[0]) for p in payloads]
            k = self.split_points[cids[0]]
            if any(calibrate):  # each calibrating client scored on its own rows, as when its job ran alone
                with self.probe_batch(cids, sizes, range(k, len(self._blocks())), k == 0, calibrate):
                    return self._step_batch(jobs, sizes, payloads)
            return self._step_batch(jobs, sizes, payloads)
        finally:
            self.timed("server_step", start)

    def _step_batch(self, jobs: list[tuple[int, int, int]], sizes: list[int], payloads) -> tuple:
        if not self.shared:
            raise RuntimeError("batched server steps need the shared server set (SFL-V1 jobs run one by one)")
        hidden, mask, labels = (torch.cat([p[i] for p in payloads]).to(self.device) for i in range(3))
        c0, number, it = jobs[0]
        k = self.split_points[c0]
        state = self.state_of(c0)
        self.slots.load(state.adapters, state.head)
        self.use_version(self.latest)
        torch.manual_seed(step_seed(self.setup.seed, c0, number, it, 1))
        split = self.split(k)
        received = hidden if k == 0 else hidden.detach().requires_grad_(True)
        logits = split.client(received, mask) if k == 0 else split.server(received, mask)
        losses = [split.loss(lg, lb) for lg, lb in zip(logits.split(sizes), labels.split(sizes), strict=True)]
        torch.stack(losses).sum().backward()
        state.step()
        values = [reported(loss, lb) for loss, lb in zip(losses, labels.split(sizes), strict=True)]
        if k == 0:
            return (*[None] * len(jobs), *values)
        return (*(g.cpu() for g in received.grad.split(sizes)), *values)

    def export(self, cids: list[int]) -> dict[int, tuple[Factors, dict[str, torch.Tensor]]]:
        return {c: self.state_of(c).export() for c in cids if (-1 if self.shared else c) in self.states}

    def evaluate(self, factors: Factors, head: dict[str, torch.Tensor], batch_size: int = 64) -> dict[str, float]:
        """The global model (base + `factors`, `head`) on the held-out data."""
        start = time.perf_counter()
        adapters = _clone_parameters(factors, factors, self.device)
        self.slots.load(adapters, _clone_head(head, self.device) or None)
        self.use_version(self.latest)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.setup.eval_threads or os.cpu_count() or 1)  # the clients are idle meanwhile
        try:
            metrics = evaluate(self.split(len(self._blocks())), self.test, batch_size)
        finally:
            torch.set_num_threads(threads)
        self.timed("evaluate", start)
        return metrics

    def snapshot(self, cids: list[int]) -> dict:
        """The server-side state of `cids` (None where it holds none) and the shared set, if any."""
        owners = [-1] if self.shared else cids
        return {"states": {o: self.states[o].state_dict() if o in self.states else None for o in owners},
                "split_points": dict(self.split_points),
                "scores": copy.deepcopy(self.scores)}  # every client's (those of this session so far)

    def restore(self, snapshot: dict, merges: list) -> None:
        self.states = {owner: AdapterState.from_state_dict(state, self.setup.server, self.device)
                       for owner, state in snapshot["states"].items()}
        self.split_points = dict(snapshot["split_points"])
        self.scores = copy.deepcopy(snapshot.get("scores", {}))
        self.replay_merges(merges, set())
