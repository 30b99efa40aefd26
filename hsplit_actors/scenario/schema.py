"""The scenario schema (SPEC §1-§2, §5-§7). Unknown keys are errors everywhere; defaults are written back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PositiveFloat,
    PositiveInt,
    Tag,
    field_validator,
    model_validator,
)

from hsplit_actors.costmodel.presets import PRESETS


class Strict(BaseModel):
    # numbers must be finite everywhere: an infinite FLOP/s, budget or bandwidth makes every duration 0 or nan
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# -- distributions: a fleet field is a constant or one of these, sampled per device with the scenario seed ------
class UniformDist(Strict):
    uniform: tuple[PositiveFloat, PositiveFloat]

    @model_validator(mode="after")
    def _ordered(self) -> UniformDist:
        if self.uniform[0] > self.uniform[1]:
            raise ValueError(f"uniform bounds must be [low, high] with low <= high, got {list(self.uniform)}")
        return self


class LogNormalParams(Strict):
    median: PositiveFloat
    sigma: Annotated[float, Field(ge=0)] = 0.5


class LogNormalDist(Strict):
    lognormal: LogNormalParams


class ChoiceDist(Strict):
    choice: Annotated[dict[PositiveFloat, PositiveFloat], Field(min_length=1)]  # value -> weight (both > 0)


FORM_TAG = "<{}>"  # pydantic puts the tag in an error's path; the loader drops it (no key can be spelt so)


def _form(*keys: str) -> Callable[[Any], str | None]:
    """Which alternative of a number-or-mapping union a value means: `number` for a scalar, else the one of `keys`
    the mapping names. Picking it up front makes an error speak of that alternative only, instead of pydantic
    listing how the value failed each of them (`uplink_mbps.function-after[_ordered(), UniformDist]`)."""
    number, tags = FORM_TAG.format("number"), {k: FORM_TAG.format(k) for k in keys}

    def form(value: Any) -> str | None:  # called once per fleet field: kept cheap
        if type(value) is dict:  # validating
            named = [k for k in value if k in tags]
        elif isinstance(value, BaseModel):  # serialising: the member it is
            named = [k for k in type(value).model_fields if k in tags]
        else:
            return number
        return tags[named[0]] if len(named) == 1 else None

    return form


def _one_of(number: Any, message: str, **mappings: Any) -> Any:
    """A value that is a number (or string) or a mapping keyed by one of `mappings`' names."""
    members = [Annotated[number, Tag(FORM_TAG.format("number"))],
               *(Annotated[m, Tag(FORM_TAG.format(k))] for k, m in mappings.items())]
    return Annotated[Union[tuple(members)], Discriminator(  # noqa: UP007 - built at run time
        _form(*mappings), custom_error_type="form", custom_error_message=message)]


Positive = _one_of(PositiveFloat, "expected a number > 0 or one of {uniform: [low, high]}, "
                   "{lognormal: {median: M, sigma: S}}, {choice: {value: weight, ...}}",
                   uniform=UniformDist, lognormal=LogNormalDist, choice=ChoiceDist)


class ProfileChoice(Strict):
    """Sample a device type per device, by weight: `{choice: {jetson_nano: 3, agx_orin: 1}}`."""

    choice: Annotated[dict[str, PositiveFloat], Field(min_length=1)]


class Windows(Strict):
    """On-line windows in virtual seconds, repeated every `period` seconds when it is given."""

    windows: Annotated[list[tuple[Annotated[float, Field(ge=0)], PositiveFloat]], Field(min_length=1)]
    period: PositiveFloat | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Windows:
        for start, end in self.windows:
            if end <= start:
                raise ValueError(f"window [{start}, {end}] must end after it starts")
            if self.period is not None and end > self.period:
                raise ValueError(f"window [{start}, {end}] does not fit in period {self.period}")
        return self


Probability = Annotated[float, Field(ge=0, le=1)]


# -- sections -------------------------------------------------------------------------------------------------
class ModelSpec(Strict):
    """A built-in preset or a local model directory (its config.json; weights only for `run`)."""

    preset: str | None = None
    path: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # for training: pretrained (a directory, or MiniLM from its package), random (preset config), or auto
    weights: Literal["auto", "pretrained", "random"] = "auto"

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.preset is None) == (self.path is None):
            raise ValueError("give exactly one of `preset` (one of " + ", ".join(PRESETS) + ") or `path`")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.path is not None and not (Path(self.path) / "config.json").is_file():
            raise ValueError(f"no config.json in {self.path!r}; point `path` at a local model directory")
        return self


class PartitionSpec(Strict):
    kind: Literal["iid", "dirichlet", "quantity"] = "iid"
    alpha: PositiveFloat = 0.5  # Dirichlet concentration (dirichlet) or quantity-skew concentration (quantity)
    by: str = "label"  # Dirichlet key: label (SST-2) or an E2E attribute such as `eatType`


class DataSpec(Strict):
    dataset: Literal["sst2", "e2e", "synthetic"] = "synthetic"
    path: str | None = None  # default: the repository's data/ copy of the dataset
    batch_size: PositiveInt = 8
    seq_len: PositiveInt = 64
    samples_per_client: PositiveInt = 500
    partition: PartitionSpec = Field(default_factory=PartitionSpec)
    # samples of the training file held out (seeded) before the clients' samples are drawn: a validation split
    # for tuning (`hsplit compare` with `compare.tune`); never the evaluation set. 0: none held out
    validation_samples: Annotated[int, Field(ge=0)] = 0


class TimingSpec(Strict):
    """A measured profile (`hsplit calibrate`) and the thread count to read it at (default: the profile's)."""

    file: str
    threads: PositiveInt | None = None


Timing = _one_of(str, "expected a profile file written by `hsplit calibrate`, or {file: F, threads: N}",
                 file=TimingSpec)


class BatchingSpec(Strict):
    """Queued server jobs of one split point and adapter set run as one batch of up to `max_jobs` (shared server
    methods); a batch that is not full waits until its first job has waited `max_wait_ms`."""

    max_jobs: PositiveInt
    max_wait_ms: Annotated[float, Field(ge=0)] = 0.0


class ProfileSpec(Strict):
    """A user-defined device type: its sustained FLOP/s (at the scenario's precision), memory and link; the
    default timing model's memory bandwidth and per-kernel cost (fleet/catalogue.yaml says what they are)."""

    flops: PositiveFloat
    memory_gb: PositiveFloat
    uplink_mbps: PositiveFloat
    downlink_mbps: PositiveFloat
    latency_ms: Annotated[float, Field(ge=0)] = 20.0
    mem_gbps: PositiveFloat = 50.0
    launch_us: Annotated[float, Field(ge=0)] = 25.0


DeviceOrChoice = _one_of(str, "expected a device name or {choice: {name: weight, ...}}", choice=ProfileChoice)
Availability = _one_of(Probability, "expected a probability in [0, 1] or {windows: [[start, end], ...], period: P}",
                       windows=Windows)


class FleetGroup(Strict):
    """`count` devices of one profile (or sampled profiles); any field may be a constant or a distribution."""

    profile: DeviceOrChoice
    count: PositiveInt = 1
    flops: Positive | None = None
    memory_gb: Positive | None = None
    uplink_mbps: Positive | None = None
    downlink_mbps: Positive | None = None
    latency_ms: Positive | None = None
    mem_gbps: Positive | None = None  # memory bandwidth, GB/s (default timing model)
    launch_us: Positive | None = None  # fixed cost per kernel, microseconds (default timing model)
    availability: Availability = 1.0  # probability of taking part in a round, or on-line windows
    priority: int = 0  # for `server.queue: priority`: lower runs first
    timing: Timing | None = None  # measured profile: compute durations from it instead of FLOPs / flops


class ServerSpec(Strict):
    profile: str = "a100_40gb"
    gpus: PositiveInt = 1
    flops: PositiveFloat | None = None  # sustained, per GPU; default: the profile's peak at model.dtype x utilisation
    memory_gb: PositiveFloat | None = None
    mem_gbps: PositiveFloat | None = None  # default from the profile
    launch_us: Annotated[float, Field(ge=0)] | None = None  # default from the profile
    queue: Literal["fifo", "sjf", "priority"] = "fifo"
    timing: Timing | None = None  # measured profile: server durations from it instead of FLOPs / flops
    batching: BatchingSpec | None = None


Matrix = Literal["query", "key", "value", "attn_out", "ffn_gate", "ffn_in", "ffn_out"]


class DeviceOverride(Strict):
    split_point: PositiveInt | None = None
    rank: Annotated[int, Field(ge=0)] | None = None


class _MethodBase(Strict):
    """A method's settings; a new method subclasses it with `name: Literal["..."]` (see `register_method`)."""

    splits_model: ClassVar[bool] = False  # the method cuts the model between two blocks (a split point)
    targets: list[Matrix] = Field(default_factory=lambda: ["query", "value"])
    rank: PositiveInt = 4
    alpha: PositiveFloat | None = None  # LoRA alpha; default 2 x rank
    lr: PositiveFloat | None = None  # this method's learning rate (default: train.lr); for `hsplit compare`


class SFLSpec(_MethodBase):
    """SplitFed with a fixed split for all (or per device type): `variant` v1 per-client server side, v2 shared."""

    name: Literal["sfl"]
    splits_model: ClassVar[bool] = True
    split_point: PositiveInt | None = None  # default: the deepest split every device can hold
    variant: Literal["v1", "v2"] = "v1"
    per_device: dict[str, DeviceOverride] = Field(default_factory=dict)


class SplitLoRASpec(_MethodBase):
    name: Literal["splitlora"]
    splits_model: ClassVar[bool] = True
    split_point: PositiveInt | None = None  # default: the deepest split the weakest device can hold


class FedITSpec(_MethodBase):
    name: Literal["fedit"]


RankSet = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class FLoRASpec(_MethodBase):
    name: Literal["flora"]
    ranks: RankSet = Field(default_factory=lambda: [2, 4, 8, 16])  # per client: the largest that fits


class HetLoRASpec(_MethodBase):
    name: Literal["hetlora"]
    ranks: RankSet = Field(default_factory=lambda: [2, 4, 8, 16])
    prune_gamma: Annotated[float, Field(gt=0, le=1)] = 0.99  # self-pruning: the tail ranks are floor(gamma r)..r
    prune_lambda: Annotated[float, Field(ge=0)] = 0.01  # weight of the tail-norm penalty in the local loss


class HSplitLoRASpec(_MethodBase):
    """SPEC §4: IWI + ARMSC + NAA. `targets` are the candidate matrices (default: every linear map of a block)."""

    name: Literal["hsplitlora"]
    splits_model: ClassVar[bool] = True
    targets: list[Matrix] | None = None  # type: ignore[assignment]
    ranks: RankSet = Field(default_factory=lambda: [0, 2, 4, 8, 16])  # Q
    beta: Annotated[float, Field(ge=0, lt=1)] = 0.85  # importance smoothing over rounds
    reconfigure_threshold: Annotated[float, Field(ge=0, le=1)] = 0.1  # Kendall distance that triggers ARMSC
    importance_iterations: Annotated[int, Field(ge=0)] = 1  # calibration iterations per round (0: IWI off)
    time_target_s: PositiveFloat | None = None  # per-iteration latency target for the split choice
    allow_federated: bool = False  # may ARMSC put the whole model on a device (k = L) when that is fastest
    # ARMSC's split rule: `latency` the split with the lowest estimated iteration latency that the memory holds;
    # `budget` the deepest split the memory holds; `weakest` SplitLoRA's rule, one split for all: the deepest the
    # smallest budget holds with its blocks frozen (ranks then fill what is left, possibly nothing): ARMSC's split off
    split_objective: Literal["latency", "budget", "weakest"] = "latency"
    # the drift-aware rule (SPEC §4): a device holds at most this share of the blocks (at least one), so the rest
    # train on the server on every client's activations instead of on one device's skewed shard; 1: no cap.
    # Default 0.2 (MiniLM: 1 of 6 blocks), from RESULTS.md §1a: on label-skewed shards, devices 1 block deep
    # trained and 3 or 5 blocks deep stayed at chance, while an iid partition trained 5 deep
    max_client_share: Annotated[float, Field(gt=0, le=1)] = 0.2
    # `importance`: ranks from Q greedily by importance per byte (IWI); `uniform`: the same budget spent on one
    # rank for every candidate matrix (the largest level of Q that fits; IWI off)
    rank_rule: Literal["importance", "uniform"] = "importance"
    # `naa`: stacked factors (exact sum); `zero_pad`: A and B averaged separately, zero-padded to the largest rank
    # (HetLoRA's rule: the product of averages, with its cross terms)
    aggregator: Literal["naa", "zero_pad"] = "naa"
    # the fresh adapters after each merge: `reset` starts a new optimiser; `keep` keeps AdamW's moments where the
    # shapes are unchanged
    optimizer_on_restart: Literal["reset", "keep"] = "reset"

    @model_validator(mode="after")
    def _some_rank(self) -> HSplitLoRASpec:
        if not any(r > 0 for r in self.ranks):
            raise ValueError(f"ranks {self.ranks} holds no positive rank; Q needs at least one (e.g. [0, 2, 4, 8, 16])")
        return self


class CenLoRASpec(_MethodBase):
    name: Literal["cenlora"]


def method_name(spec: type[_MethodBase]) -> str:
    return get_args(spec.model_fields["name"].annotation)[0]


# The one registry of methods' settings, in order: the method union, the names `compare` takes and the split-method
# set are read off it (methods/__init__.py registers each strategy with its settings class; a new method added
# later joins through `register_method`, which updates these lists in place and rebuilds the schema).
METHOD_SPECS: list[type[_MethodBase]] = [HSplitLoRASpec, SplitLoRASpec, HetLoRASpec, FedITSpec, FLoRASpec, SFLSpec,
                                         CenLoRASpec]
METHOD_NAMES: list[str] = [method_name(spec) for spec in METHOD_SPECS]
SPLIT_METHODS: list[str] = [method_name(spec) for spec in METHOD_SPECS if spec.splits_model]
MethodSpec = Annotated[Union[tuple(METHOD_SPECS)], Field(discriminator="name")]  # noqa: UP007 - from the registry
MethodName = Literal[tuple(METHOD_NAMES)]  # type: ignore[valid-type]


Seed = Annotated[int, Field(ge=0, lt=2**63)]


class CompareSpec(Strict):
    """`hsplit compare`: the variants (a method with overrides), the seeds each runs under, the target, tuning."""

    methods: list[MethodName] = Field(default_factory=lambda: list(METHOD_NAMES))
    per_method: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # name -> {method: NAME, any of that method's settings, aggregation, rounds, local_iterations, tune};
    # default: one variant per entry of `methods`, named after it, with `per_method[name]` as its overrides
    variants: dict[str, dict[str, Any]] | None = None
    seeds: Annotated[list[Seed], Field(min_length=1)] | None = None  # default: [seed]
    # virtual time to reach this eval metric (accuracy: >=, perplexity: <=); default: the best metric that every
    # variant reached, so each time-to-target is defined
    target: PositiveFloat | None = None
    hold: PositiveInt = 2  # time-to-target: the first evaluation from which the target holds this many in a row
    # setting -> candidates, chosen per variant on a validation split carved from the training data
    tune: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)
    tune_by: Literal["final", "auc"] = "final"  # the validation figure tuning maximises (perplexity: minimises)
    # refuse the final runs of a variant whose tuning found no working point: its best validation accuracy within
    # 2 standard errors of predicting the majority class, or every point within 1 standard error of the others
    tune_guard: bool = True
    tune_seeds: Annotated[list[Seed], Field(min_length=1)] | None = None  # seeds tuning runs under (default: seeds)
    validation_samples: PositiveInt = 400  # the held-out split tuning evaluates on (data.validation_samples)
    cpus_per_run: PositiveFloat = 2.0  # Ray resources a run takes: a cluster runs CPUs / this many at once

    @model_validator(mode="after")
    def _distinct_seeds(self) -> CompareSpec:
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds} repeat a seed; give each once")
        return self


class KillSpec(Strict):
    """Fault injection: kill client actor `actor` (or the server actor) in round `round` (the index of the
    aggregation it leads to): `at: step` after `after_steps` client steps; or at that aggregation, just before
    the hosts export the trained adapters (`export`), fold a merge into their base (`merge`), the server evaluates
    (`evaluate`), or the recovery point is captured (`capture`). Ray restarts it, or with `restart: false` the
    coordinator replaces it."""

    round: Annotated[int, Field(ge=0)]
    at: Literal["step", "export", "merge", "evaluate", "capture"] = "step"
    after_steps: PositiveInt = 1
    actor: Annotated[int, Field(ge=0)] = 0
    restart: bool = True  # false: gone for good, as when its node is lost; the coordinator starts a replacement
    server: bool = False  # kill the server actor instead (`actor` is then ignored)


class ScheduleSpec(Strict):
    """The learning rate over a trainable set's own optimiser steps (SPEC §5): `warmup_steps` rising linearly to
    the full rate, then `constant`, or `linear` / `cosine` decay to 0 at `total_steps` (default: the steps the run
    gives that set if it takes part every time; see `training/recipe.py`)."""

    kind: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    total_steps: PositiveInt | None = None

    @model_validator(mode="after")
    def _room_to_decay(self) -> ScheduleSpec:
        if self.total_steps is not None and self.kind != "constant" and self.total_steps <= self.warmup_steps:
            raise ValueError(f"total_steps {self.total_steps} leaves no step to decay after warmup_steps "
                             f"{self.warmup_steps}; raise total_steps or lower warmup_steps")
        return self


class TrainSpec(Strict):
    """Real training (`hsplit run`)."""

    lr: PositiveFloat = 2e-3
    # the recipe every method trains with (SPEC §5): AdamW, this schedule, weight decay (0.01 is torch's AdamW
    # default and SplitLoRA's reference value), gradient clipping by global norm per trainable set (null: none),
    # label smoothing of the training loss (evaluation is never smoothed), and the server-side adapters' rate
    # (null: `lr`; it is not aggregation.server_lr, which scales an aggregated update)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    max_grad_norm: PositiveFloat | None = None
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    server_side_lr: PositiveFloat | None = None
    eval_every: PositiveInt = 1  # evaluate the global model every N rounds
    # evaluation samples (SST-2: GLUE's labelled dev split, data/sst2/test.tsv; E2E: test pairs)
    eval_samples: PositiveInt = 872
    actors: PositiveInt | None = None  # client actors; default: every core (Ray's CPUs, or a compare trial's,
    # less one for the server host of a split method), at most one per client
    threads_per_actor: PositiveInt = 1  # the same everywhere, so results do not depend on placement
    # sync and semi-sync rounds: a virtual client moves, whole, to a less loaded client actor between two of its
    # iterations when a round's steps do not divide evenly (5 clients on 2 actors: 25 and 25 steps, not 30 and
    # 20); results never depend on where a client runs
    balance: bool = True
    # threads the server host evaluates with; null: every core of its machine, or in a compare trial the CPUs the
    # trial holds (nothing else of the run computes then: the coordinator waits for every submitted step before it
    # aggregates, and evaluates before it submits more)
    eval_threads: PositiveInt | None = None
    max_in_flight: PositiveInt = 64  # submitted-but-unfinished steps before the coordinator waits
    local: bool = False  # in-process hosts instead of Ray actors (same results)
    checkpoint: bool = True  # write checkpoints/round_NNNN.pt each round (for --resume)
    keep_checkpoints: PositiveInt | None = 2  # the newest N are kept, older ones deleted; null: every round's
    # the final global model in Hugging Face form, under model/: a peft adapter directory, or merged for methods
    # that fold updates into the base (`hsplit export RUN_DIR` writes it again, or merged, for any finished run)
    export: bool = True
    # each aggregation's loss, metric, staleness, queue wait and bytes as TensorBoard event files under
    # tensorboard/ (step: the version; time: virtual seconds)
    tensorboard: bool = False
    # Client forwards run without keeping their graph and are recomputed (same seed, same bits) at backward time:
    # memory per waiting virtual client drops from its activations to its batch, for one more client forward.
    recompute_activations: bool = False
    kill_actor: list[KillSpec] = Field(default_factory=list)  # inject faults to study recovery
    # what eval_metric is measured on: `test` the evaluation set (SST-2: GLUE's labelled dev split; E2E: its test
    # set), `validation` the data.validation_samples held out from the training file (for tuning)
    evaluate_on: Literal["test", "validation"] = "test"

    @model_validator(mode="after")
    def _faults_need_actors(self) -> TrainSpec:
        if self.kill_actor and self.local:
            raise ValueError("fault injection (kill_actor) kills Ray actors; unset local")
        return self


class StalenessSpec(Strict):
    """w(s) for an update computed on a version `s` aggregations old: `constant` 1; `polynomial` 1/(1+s)^a;
    `hinge` 1 while s <= b, then 1/(a (s - b) + 1) (FedAsync's names)."""

    kind: Literal["constant", "polynomial", "hinge"] = "constant"
    a: Finite | None = None  # default 0.5 (polynomial) or 10 (hinge)
    b: Annotated[int, Field(ge=0)] = 4  # hinge: staleness that is not discounted


Finite = Annotated[float, Field(gt=0, allow_inf_nan=False)]  # an infinite deadline or end never comes: leave it out

# each aggregation mode's schema entry: the settings it takes (its schedule is registered in engine/schedules)
AGGREGATION_KEYS = {
    "sync": {"interval"},
    "semi_sync": {"deadline_s", "min_updates", "late", "max_staleness", "staleness", "server_lr"},
    "async": {"concurrency", "buffer", "staleness", "max_staleness", "server_lr", "aggregations", "until_s",
              "retry_s"},
}


class AggregationSpec(Strict):
    """When updates are aggregated (SPEC §9). `sync`: rounds, aggregating every `interval` rounds. `semi_sync`:
    a round closes `deadline_s` after it starts or once `min_updates` arrived; late work is dropped or carried.
    `async` (FedBuff): `concurrency` clients train at once; every `buffer` arrivals are aggregated."""

    mode: str = "sync"  # a registered schedule (engine/schedules) with an entry in AGGREGATION_KEYS
    interval: PositiveInt | None = None  # sync: aggregate every N rounds (and after the last); default 1
    deadline_s: Finite | None = None  # semi_sync: virtual seconds after a round starts (null: no deadline)
    min_updates: PositiveInt | None = None  # semi_sync: close once this many arrived (default: every participant)
    late: Literal["drop", "carry"] | None = None  # semi_sync: late clients stop, or their update joins the next
    concurrency: PositiveInt | None = None  # async: clients training at once
    buffer: PositiveInt | None = None  # async: arrivals per aggregation (K)
    staleness: StalenessSpec | None = None  # semi_sync / async: how updates on older versions are weighted
    max_staleness: Annotated[int, Field(ge=0)] | None = None  # updates staler than this are dropped (logged)
    server_lr: Finite | None = None  # scales the applied update (default 1)
    aggregations: PositiveInt | None = None  # async: stop after N aggregations
    until_s: Finite | None = None  # async: stop at this virtual time
    retry_s: Finite | None = None  # async: an empty slot draws again after this long when nobody was free

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, mode: str) -> str:
        if mode not in AGGREGATION_KEYS:
            *first, last = (repr(m) for m in AGGREGATION_KEYS)
            raise ValueError(f"input should be {', '.join(first)} or {last} (got {mode!r})")
        return mode

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("staleness"), str):
            data = data | {"staleness": {"kind": data["staleness"]}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> AggregationSpec:
        given = {k for k in self.model_fields_set if k != "mode" and getattr(self, k) is not None}
        wrong = sorted(given - AGGREGATION_KEYS[self.mode])
        if wrong:
            modes = [m for m, keys in AGGREGATION_KEYS.items() if wrong[0] in keys]
            raise ValueError(f"`{wrong[0]}` has no meaning in mode {self.mode}; it is for mode "
                             f"{' or '.join(modes)} (or remove it)")
        if self.mode == "async":
            if self.concurrency is None or self.buffer is None:
                raise ValueError("mode async needs `concurrency` (clients training at once) and `buffer` "
                                 "(arrivals per aggregation)")
            if self.buffer > self.concurrency:
                raise ValueError(f"buffer {self.buffer} exceeds concurrency {self.concurrency}: a buffer can never "
                                 "fill from fewer clients; lower buffer or raise concurrency")
            if self.aggregations is None and self.until_s is None:
                raise ValueError("mode async has no rounds: give `aggregations` (how many) or `until_s` "
                                 "(virtual seconds) to say when it ends")
        return self

    # resolved settings, with the defaults of each mode
    @property
    def every(self) -> int:
        return self.interval or 1

    @property
    def weights(self) -> StalenessSpec:
        return self.staleness or StalenessSpec()

    @property
    def lr(self) -> float:
        return self.server_lr or 1.0


EventResolution = Literal["phase", "iteration", "none"]  # rows of the events table (tables.EventRows)


class RaySpec(Strict):
    address: str | None = None  # join a running cluster ("auto" or host:port); default: start one locally


class Scenario(Strict):
    """One experiment: fleet + model + data + method + schedule. `hsplit validate` checks a file against this."""

    name: str = "scenario"
    seed: Seed = 0
    model: ModelSpec
    data: DataSpec = Field(default_factory=DataSpec)
    profiles: dict[str, ProfileSpec] = Field(default_factory=dict)
    fleet: Annotated[list[FleetGroup], Field(min_length=1)]
    server: ServerSpec = Field(default_factory=ServerSpec)
    method: MethodSpec
    rounds: PositiveInt = 10
    local_iterations: PositiveInt = 10
    aggregation_interval: PositiveInt | None = None  # old spelling of aggregation: {mode: sync, interval: N}
    aggregation: AggregationSpec = Field(default_factory=AggregationSpec)
    output_dir: str = "runs"
    events: EventResolution = "phase"  # the events table: per phase, per client iteration, or none
    progress: bool = True
    train: TrainSpec = Field(default_factory=TrainSpec)
    ray: RaySpec = Field(default_factory=RaySpec)
    compare: CompareSpec = Field(default_factory=CompareSpec)

    @model_validator(mode="after")
    def _old_interval(self) -> Scenario:
        """`aggregation_interval: N` is `aggregation: {mode: sync, interval: N}`; given both, they must agree."""
        old = self.aggregation_interval
        if old is None:
            return self
        agg = self.aggregation
        if "aggregation" in self.model_fields_set and (agg.mode != "sync" or agg.interval not in (None, old)):
            raise ValueError("aggregation_interval is the old spelling of aggregation.interval (mode sync); give "
                             "only `aggregation:`")
        object.__setattr__(self, "aggregation", agg.model_copy(update={"interval": old}))
        object.__setattr__(self, "aggregation_interval", None)
        return self

    @model_validator(mode="after")
    def _schedule_ends(self) -> Scenario:
        from hsplit_actors.training.recipe import schedule_problem

        problem = schedule_problem(self, sum(group.count for group in self.fleet))
        if problem is not None:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _validation_split(self) -> Scenario:
        if self.train.evaluate_on == "validation" and not self.data.validation_samples:
            raise ValueError("train.evaluate_on: validation needs data.validation_samples > 0 (the held-out split)")
        return self


def register_method(spec: type[_MethodBase]) -> None:
    """Make a method's settings class part of the schema: a scenario's `method:` union, the names `compare` takes
    and, when it splits the model, the split-method set. `methods.register` calls it for a new strategy."""
    if spec not in METHOD_SPECS:
        METHOD_SPECS.append(spec)
        rebuild_method_schema()


def rebuild_method_schema() -> None:
    """Re-derive the names from METHOD_SPECS and rebuild the models that hold a method (after it changed)."""
    METHOD_NAMES[:] = [method_name(spec) for spec in METHOD_SPECS]
    SPLIT_METHODS[:] = [method_name(spec) for spec in METHOD_SPECS if spec.splits_model]
    Scenario.model_fields["method"].annotation = Union[tuple(METHOD_SPECS)]  # noqa: UP007 - from the registry
    CompareSpec.model_fields["methods"].annotation = list[Literal[tuple(METHOD_NAMES)]]  # type: ignore[valid-type]
    CompareSpec.model_rebuild(force=True)
    Scenario.model_rebuild(force=True)
