"""Each method's own law: NAA's stacking is exact (and FedAvg of factors is not), HetLoRA's zero-padded
norm-weighted aggregation and self-pruning, ARMSC's budgets, monotone splits and hysteresis, IWI's arithmetic and
its hooks against autograd's true weight gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hsplit_actors.costmodel import ClientConfig, ModelArch, iteration_cost
from hsplit_actors.costmodel.presets import build_config
from hsplit_actors.fleet import Fleet
from hsplit_actors.methods import METHODS, make_strategy
from hsplit_actors.methods.aggregate import Trained, fedavg, stack, zero_pad_aggregate, zero_padded_average
from hsplit_actors.methods.base import GIB, ImportanceCalibration, ServerInfo, SharedServerSet, fresh_adapters
from hsplit_actors.methods.hetlora import tail_norm
from hsplit_actors.methods.hsplitlora import Importance, greedy_ranks, ranking_distance, step_priority
from hsplit_actors.model.families import family_of
from hsplit_actors.model.lora import LoRAFactors
from hsplit_actors.model.split import SplitModel
from hsplit_actors.scenario.schema import CenLoRASpec, HetLoRASpec, HSplitLoRASpec
from hsplit_actors.training.hosts import _clone_parameters
from hsplit_actors.training.importance import ImportanceProbe
from hsplit_actors.training.slots import Slots
from tests.conftest import explicit_fleet
from tests.test_split import batch, small_model

MINILM = ModelArch.from_hf_config(build_config("minilm-l6"))


def factors(rank: int, seed: int, shape=(12, 10), alpha: float | None = None) -> LoRAFactors:
    g = torch.Generator().manual_seed(seed)
    out, inp = shape
    return LoRAFactors(torch.randn(rank, inp, generator=g), torch.randn(out, rank, generator=g),
                       alpha if alpha is not None else 2.0 * rank)


def trained_sets(ranks: list[int], weights: list[float], seed: int = 0) -> list[Trained]:
    return [Trained(i, w, {(0, "query"): factors(r, seed + i, alpha=1.0 + i)}, {})
            for i, (r, w) in enumerate(zip(ranks, weights, strict=True))]


# -- NAA ----------------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(ranks=st.lists(st.integers(1, 9), min_size=1, max_size=6), seed=st.integers(0, 10_000),
       data=st.data())
def test_stacking_equals_the_weighted_sum_of_every_clients_update(ranks, seed, data) -> None:
    weights = data.draw(st.lists(st.floats(0.5, 100), min_size=len(ranks), max_size=len(ranks)))
    trained = trained_sets(ranks, weights, seed)
    stacked = stack(trained)[(0, "query")]
    total = sum(weights)
    exact = sum((w / total) * f.factors[(0, "query")].scale * f.factors[(0, "query")].B
                @ f.factors[(0, "query")].A for f, w in zip(trained, weights, strict=True))
    assert stacked.rank == sum(ranks)  # what participants download: sum r_i (in + out) numbers
    assert stacked.scale == 1.0
    torch.testing.assert_close(stacked.delta(), exact, rtol=1e-5, atol=1e-5)


def test_fedavg_of_factors_misses_exactly_the_cross_terms() -> None:
    """(sum p B)(sum p A) - sum p B A = sum_{i != j} p_i p_j B_i A_j - sum p_i (1 - p_i) B_i A_i: not zero."""
    trained = [Trained(i, w, {(0, "value"): factors(4, i, alpha=4.0)}, {}) for i, w in enumerate([1.0, 2.0, 5.0])]
    p = [t.weight / 8.0 for t in trained]
    F = [t.factors[(0, "value")] for t in trained]
    averaged, _ = fedavg(trained)
    exact = stack(trained)[(0, "value")].delta()
    cross = sum(p[i] * p[j] * F[i].B @ F[j].A for i in range(3) for j in range(3) if i != j) \
        - sum(p[i] * (1 - p[i]) * F[i].B @ F[i].A for i in range(3))
    noise = averaged[(0, "value")].delta() - exact
    torch.testing.assert_close(noise, cross, rtol=1e-4, atol=1e-4)  # scale is 1 for every copy (alpha = rank)
    assert noise.norm() / exact.norm() > 0.1  # not a rounding effect: measured, a large fraction of the update


def test_stacking_skips_nobody_across_split_points() -> None:
    """A matrix trained on the device by one client and on the server for another is stacked from both."""
    a = Trained(0, 1.0, {(0, "query"): factors(2, 1), (1, "query"): factors(3, 2)}, {})  # k = 1 client
    b = Trained(1, 3.0, {(1, "query"): factors(5, 3)}, {})  # federated client without block-0 query
    out = stack([a, b])
    assert out[(0, "query")].rank == 2 and out[(1, "query")].rank == 8
    expected = 0.25 * a.factors[(1, "query")].delta() + 0.75 * b.factors[(1, "query")].delta()
    torch.testing.assert_close(out[(1, "query")].delta(), expected, rtol=1e-5, atol=1e-5)


def test_the_shared_server_set_is_stacked_once_with_the_summed_weight() -> None:
    """Three clients split before block 1 all carry the one server set there: it is downloaded and merged once."""
    server = factors(4, 9, alpha=8.0)
    trained = [Trained(i, w, {(0, "query"): factors(2, i), (1, "query"): server}, {})
               for i, w in enumerate([1.0, 2.0, 5.0])]
    out = stack(trained)
    assert out[(0, "query")].rank == 6 and out[(1, "query")].rank == 4
    torch.testing.assert_close(out[(1, "query")].delta(), server.delta(), rtol=1e-5, atol=1e-5)  # weights sum to 1
    torch.testing.assert_close(out[(0, "query")].delta(),
                               sum(t.weight / 8.0 * t.factors[(0, "query")].delta() for t in trained),
                               rtol=1e-5, atol=1e-5)


# -- HetLoRA -------------------------------------------------------------------------------------------------
def test_hetlora_zero_pads_weights_by_update_norm_and_clients_take_their_first_ranks() -> None:
    small, large = factors(2, 1, alpha=4.0), factors(6, 2, alpha=12.0)
    trained = [Trained(0, 1.0, {(0, "query"): small}, {}), Trained(1, 1.0, {(0, "query"): large}, {})]
    agg = zero_pad_aggregate(trained)[(0, "query")]
    w = torch.tensor([small.delta().norm(), large.delta().norm()])
    w = w / w.sum()
    expected_A = w[1] * large.A.clone()
    expected_A[:2] += w[0] * small.A
    assert agg.rank == 6
    torch.testing.assert_close(agg.A, expected_A)
    torch.testing.assert_close(agg.B[:, 2:], w[1] * large.B[:, 2:])
    strategy = make_strategy(HetLoRASpec(name="hetlora"), MINILM, 16, 48, "float32")
    config = ClientConfig.uniform(MINILM, MINILM.n_layers, 2, ["query"])
    view = strategy.client_adapters(1, 0, config, {(b, "query"): agg for b in range(MINILM.n_layers)})
    torch.testing.assert_close(view[(0, "query")].A, agg.A[:2])
    assert view[(0, "query")].B.shape == (agg.B.shape[0], 2)


def test_hetlora_applies_zero_padded_deltas_leaving_ranks_a_client_does_not_hold() -> None:
    """SPEC §9: against a current global of rank 6, a rank-2 client's update moves only the first 2 ranks; a
    stale one is a delta against the version it downloaded, scaled by its coefficient."""
    now, old = factors(6, 3, alpha=12.0), factors(6, 4, alpha=12.0)
    mine = LoRAFactors(old.A[:2] + 0.5, old.B[:, :2] + 0.25, 4.0)
    agg = zero_pad_aggregate([Trained(0, 1.0, {(0, "query"): mine}, {}, 0.5, ({(0, "query"): old}, {}))],
                             {(0, "query"): now})[(0, "query")]
    torch.testing.assert_close(agg.A[2:], now.A[2:])
    torch.testing.assert_close(agg.B[:, 2:], now.B[:, 2:])
    torch.testing.assert_close(agg.A[:2], now.A[:2] + 0.5 * 0.5)
    torch.testing.assert_close(agg.B[:, :2], now.B[:, :2] + 0.5 * 0.25)
    assert agg.alpha == now.alpha


def test_hetlora_self_prunes_when_the_tail_norm_shrinks_and_configures_the_pruned_rank() -> None:
    strategy = make_strategy(HetLoRASpec(name="hetlora", prune_gamma=0.75), MINILM, 16, 48, "float32")
    fleet = Fleet.explicit(["big"] * 2, flops=[1e12] * 2, memory_gb=[8.0] * 2)
    first = strategy.configure(0, fleet)
    assert [strategy.rank_of(first.configs[j]) for j in first.index] == [16, 16]
    keys = [(0, "query"), (0, "value")]

    def round_with(scale: float) -> list[Trained]:
        f = {k: factors(16, i, shape=(384, 384)) for i, k in enumerate(keys)}
        for x in f.values():
            x.B[:, 12:] *= scale  # the penalised tail
        return [Trained(0, 1.0, f, {}), Trained(1, 1.0, {k: factors(16, 9, shape=(384, 384)) for k in keys}, {})]

    strategy.self_prune(round_with(1.0))
    strategy.self_prune(round_with(0.1))  # client 0's tail shrank, client 1's did not move
    assert strategy.pruned == {0: 12}
    assignment = strategy.configure(2, fleet)
    assert [strategy.rank_of(assignment.configs[i]) for i in assignment.index] == [12, 16]
    f = factors(16, 1, shape=(384, 384))
    assert tail_norm({(0, "query"): f}, 12) == pytest.approx(float((f.scale * f.B[:, 12:] @ f.A[12:]).norm()))
    assert strategy.client_regulariser(0, ClientConfig.uniform(MINILM, 6, 12, ["query"])) == (0.01, 9)


# -- ARMSC ---------------------------------------------------------------------------------------------------
def hsplit(**spec) -> object:
    spec.setdefault("max_client_share", 1.0)  # the split objectives are tested uncapped; the drift cap on its own
    return make_strategy(HSplitLoRASpec(name="hsplitlora", **spec), MINILM, 16, 48, "float32", 0,
                         ServerInfo(4.8e13, 24.0, 1))



@settings(max_examples=25, deadline=None)
@given(memory=st.lists(st.floats(0.045, 0.3), min_size=2, max_size=5),
       flops=st.lists(st.floats(1e11, 2e13), min_size=5, max_size=5))
def test_every_armsc_configuration_fits_its_budget_by_the_cost_model(memory, flops) -> None:
    strategy = hsplit()
    fleet = explicit_fleet(memory, flops[: len(memory)])
    assignment = strategy.configure(0, fleet)
    for c, j in enumerate(assignment.index):
        if j < 0:  # infeasible: not even the embeddings and one frozen block fit
            assert memory[c] * GIB < strategy.memory(1, {})
            continue
        config = assignment.configs[j]
        assert iteration_cost(MINILM, config, 16, 48).client_memory_bytes <= memory[c] * GIB
        assert set(np.ravel(config.ranks)) <= {0, 2, 4, 8, 16}


@settings(max_examples=25, deadline=None)
@given(a=st.tuples(st.floats(0.05, 0.3), st.floats(1e11, 3e13)), b=st.tuples(st.floats(0.05, 0.3),
       st.floats(1e11, 3e13)), up=st.floats(5, 1000))
def test_a_weaker_device_never_gets_a_deeper_split(a, b, up) -> None:
    weak = (min(a[0], b[0]), min(a[1], b[1]))
    strong = (max(a[0], b[0]), max(a[1], b[1]))
    strategy = hsplit()
    assignment = strategy.configure(0, explicit_fleet([weak[0], strong[0]], [weak[1], strong[1]], up))
    k = [assignment.configs[j].split_point if j >= 0 else 0 for j in assignment.index]
    assert k[0] <= k[1]


def test_splits_follow_compute_and_network() -> None:
    """Fast devices on slow links keep the whole model; slow devices on fast links send activations early."""
    strategy = hsplit(allow_federated=True)
    fleet = Fleet.explicit(["slow_fast_link", "fast_slow_link"], flops=[1.4e11, 1.4e12], memory_gb=[0.3, 0.3],
                           uplink_mbps=[500.0, 20.0], downlink_mbps=[1000.0, 40.0])
    assignment = strategy.configure(0, fleet)
    k = [assignment.configs[j].split_point for j in assignment.index]
    assert k == [1, MINILM.n_layers]


def test_ranks_go_where_importance_is_and_reconfiguration_waits_for_the_ranking_to_move() -> None:
    strategy = hsplit(reconfigure_threshold=0.1)
    fleet = explicit_fleet([0.11], [1e12], 500.0)
    first = strategy.configure(0, fleet)
    keys = strategy.importance.keys
    # a small change that swaps no pair: same assignment object, no ARMSC
    strategy.importance.scores = {k: v * 1.01 for k, v in strategy.importance.scores.items()}
    assert strategy.configure(1, fleet) is first
    # ffn_out of the last client block becomes the most important matrix by far: the ranking moves
    reverse = {k: float(i + 1) for i, k in enumerate(sorted(keys, key=lambda k: (k[1] != "ffn_out", -k[0])))}
    strategy.importance.scores = {k: 1.0 / reverse[k] for k in keys}
    assert ranking_distance(strategy.importance.snapshot(), strategy.reference) > 0.1
    second = strategy.configure(2, fleet)
    assert second is not first and strategy.reconfigurations == [0, 2]
    config = second.configs[second.index[0]]
    top = min(keys, key=lambda k: reverse[k])
    assert config.ranks[top[0]][MINILM.matrices.index(top[1])] == 16  # the most important matrix got Q's top


def test_ranking_distance_is_the_fraction_of_discordant_pairs() -> None:
    a = {(0, "q"): 1.0, (0, "k"): 2.0, (0, "v"): 3.0}
    assert ranking_distance(a, a) == 0.0
    assert ranking_distance(a, {k: -v for k, v in a.items()}) == 1.0
    assert ranking_distance(a, {(0, "q"): 2.0, (0, "k"): 1.0, (0, "v"): 3.0}) == pytest.approx(1 / 3)


@pytest.mark.parametrize("aggregator", ["naa", "zero_pad"])
def test_hsplitlora_download_is_the_merge_of_its_side_of_the_split(aggregator: str) -> None:
    """NAA: per block on its side, every participant's device ranks there, and the shared server set's once if
    any participant left the block to the server. zero_pad: the largest of those ranks. Either way the same
    bytes the aggregator's own merge produces from the trained sets."""
    strategy = hsplit(allow_federated=True, aggregator=aggregator)
    fleet = Fleet.explicit(["slow_cpu", "slow_link", "mid"], flops=[1e9, 1e13, 1e11], memory_gb=[4.0, 4.0, 0.1],
                           uplink_mbps=[1000.0, 1.0, 100.0], downlink_mbps=[1000.0, 1.0, 100.0])
    assignment = strategy.configure(0, fleet)
    configs = [assignment.configs[j] for j in assignment.index]
    per_split = strategy.stack_download(configs)
    down = [per_split[c.split_point] for c in configs]
    splits = sorted(c.split_point for c in configs)  # mixed, two clients sharing the server set: where it counts
    assert splits[0] == splits[1] < splits[2]
    shared: dict = {}
    trained = []
    for i, config in enumerate(configs):
        sets = {}
        for b in range(MINILM.n_layers):
            for j, m in enumerate(MINILM.matrices):
                r = config.ranks[b][j]
                if r:  # device copies differ per client; the server set is one object
                    shape = MINILM.matrix_shape(m)
                    sets[(b, m)] = (factors(r, 100 * i + 10 * b + j, shape) if b < config.split_point
                                    else shared.setdefault((b, m), factors(r, 7 + 10 * b + j, shape)))
        trained.append(Trained(i, 1.0, sets, {}))
    stacked = stack(trained) if aggregator == "naa" else zero_padded_average(trained)
    combine = sum if aggregator == "naa" else max
    for (b, m), f in stacked.items():  # the server set's rank once, however many clients it served
        j = MINILM.matrices.index(m)
        on_device = [c.ranks[b][j] for c in configs if b < c.split_point]
        on_server = [strategy.server_ranks.get((b, m), 0)] if b >= splits[0] else []
        assert f.rank == combine(on_device + on_server)
    for c, config in enumerate(configs):
        expected = sum(f.rank * (f.A.shape[1] + f.B.shape[0]) for (b, _), f in stacked.items()
                       if b < config.split_point) * 4
        assert down[c] == expected


# -- IWI -----------------------------------------------------------------------------------------------------
def test_importance_normalises_by_per_rank_cost_weights_by_data_and_smooths() -> None:
    imp = Importance(MINILM, beta=0.5, matrices=("query", "ffn_in"))
    q, f = (0, "query"), (0, "ffn_in")
    imp.update(0, {0: {q: 2.0, f: 2.0}, 1: {q: 4.0}}, {0: 1.0, 1: 3.0})
    assert imp.scores[q] == pytest.approx((0.25 * 2 + 0.75 * 4) / (384 + 384))
    assert imp.scores[f] == pytest.approx(2.0 / (384 + 1536))
    imp.update(1, {0: {q: 0.0}}, {0: 1.0})
    assert imp.scores[q] == pytest.approx(0.5 * 3.5 / 768)
    assert [r["round"] for r in imp.rows] == [0, 0, 1]


def test_the_per_rank_cost_is_counted_once_between_iwi_and_armscs_greedy() -> None:
    """Equal raw scores: an attention map (in + out = 768) is worth 2.5x an FFN map (1,920) per byte, not
    2.5^2 = 6.25x. So an FFN map whose raw score is 3x the attention map's is chosen first."""
    imp = Importance(MINILM, beta=0.0, matrices=("query", "ffn_in"))
    q, f = (0, "query"), (0, "ffn_in")
    imp.update(0, {0: {q: 1.0, f: 1.0}}, {0: 1.0})
    ratio = step_priority(imp.scores[q], 0, 2) / step_priority(imp.scores[f], 0, 2)
    assert ratio == pytest.approx((384 + 1536) / (384 + 384))
    imp.update(1, {0: {q: 1.0, f: 3.0}}, {0: 1.0})
    one_matrix = lambda ranks: sum(r > 0 for r in ranks.values()) <= 1  # noqa: E731 - room for one adapted map
    assert greedy_ranks(imp.snapshot(), [q, f], [0, 2, 4], one_matrix) == {q: 0, f: 4}


def test_importance_hooks_measure_mean_abs_w_times_the_true_weight_gradient() -> None:
    """The probe's score equals mean(|W * W.grad|) from autograd with W made trainable, on every matrix,
    including block 0 whose inputs need no gradient during ordinary training."""
    model = small_model("bert").eval()  # eval: no dropout, so the two passes compute the same thing
    family = family_of(model)
    family.prepare(model)
    for p in model.parameters():
        p.requires_grad_(False)
    slots = Slots(model, [(b, m) for b in range(4) for m in family.matrix_paths])
    init = fresh_adapters(ModelArch.from_hf_config(model.config), {(2, "value"): 4}, lambda r: 8.0, [0])
    adapters = _clone_parameters(init, init)  # one trained adapter; every other slot is empty
    with torch.no_grad():
        adapters[(2, "value")].B.normal_(0, 0.1)
    slots.load(adapters)
    ids, mask, labels = batch("bert")
    split = SplitModel(model, 4)
    sink: dict = {}
    with ImportanceProbe(slots.modules, range(4), [(slice(None), sink)], family.embedding_modules(model)):
        split.loss(split.client(ids, mask), labels).backward()
    for module in slots.modules.values():
        module.get_base_layer().weight.requires_grad_(True)
    split.loss(split.client(ids, mask), labels).backward()
    for key, module in slots.modules.items():
        w = module.get_base_layer().weight
        truth = float((w.detach() * w.grad).abs().mean())
        assert sink[key] == [pytest.approx(truth, rel=1e-4, abs=1e-12)], key


def test_every_method_is_registered_and_selected_by_name() -> None:
    assert set(METHODS) == {"hsplitlora", "splitlora", "hetlora", "fedit", "flora", "sfl", "cenlora"}
    assert math.isclose(hsplit().importance.beta, 0.85)


def test_armsc_splits_every_device_unless_federated_is_allowed_and_the_server_set_is_shared() -> None:
    fleet = Fleet.explicit(["fast_slow_link"] * 2, flops=[1.4e12, 5e12], memory_gb=[0.3, 0.3],
                           uplink_mbps=[20.0, 20.0], downlink_mbps=[40.0, 40.0])
    strategy = hsplit()
    assignment = strategy.configure(0, fleet)
    configs = [assignment.configs[j] for j in assignment.index]
    assert all(1 <= c.split_point < MINILM.n_layers for c in configs)
    # the blocks after each split carry the one server set's ranks, chosen under the server's memory
    for c in configs:
        for b in range(c.split_point, MINILM.n_layers):
            for j, m in enumerate(MINILM.matrices):
                assert c.ranks[b][j] == strategy.server_ranks.get((b, m), 0)
    assert strategy.capability(SharedServerSet) and set(strategy.server_adapters(0)) == set(strategy.server_ranks)


def test_fedavg_is_the_data_weighted_mean_over_holders_and_needs_one_rank() -> None:
    """FedIT / SplitLoRA / SFL's law, A and B averaged separately; CenLoRA's single shared set passes through."""
    a, b = factors(4, 1), factors(4, 2)
    trained = [Trained(0, 1.0, {(0, "query"): a, (1, "value"): a}, {"0.w": torch.ones(2)}),
               Trained(1, 3.0, {(0, "query"): b}, {"0.w": torch.zeros(2)})]
    out, head = fedavg(trained)
    torch.testing.assert_close(out[(0, "query")].A, 0.25 * a.A + 0.75 * b.A)
    torch.testing.assert_close(out[(0, "query")].B, 0.25 * a.B + 0.75 * b.B)
    torch.testing.assert_close(out[(1, "value")].A, a.A)  # held by one participant: kept as it is
    torch.testing.assert_close(head["0.w"], torch.full((2,), 0.25))
    with pytest.raises(ValueError, match="needs one rank"):
        fedavg([Trained(0, 1.0, {(0, "query"): a}, {}), Trained(1, 1.0, {(0, "query"): factors(2, 3)}, {})])
    cen = make_strategy(CenLoRASpec(name="cenlora"), MINILM, 16, 48, "float32")
    assert cen.aggregate(0, trained).factors[(0, "query")] is a


# -- HSplitLoRA's ablation settings ---------------------------------------------------------------------------
def splits_of(assignment) -> list[int]:
    return [assignment.configs[j].split_point if j >= 0 else 0 for j in assignment.index]


@settings(max_examples=20, deadline=None)
@given(memory=st.lists(st.floats(0.05, 0.3), min_size=2, max_size=5),
       flops=st.lists(st.floats(1e11, 2e13), min_size=5, max_size=5))
def test_split_objectives(memory, flops) -> None:
    """budget: the deepest split each memory holds; weakest: one split for all, the deepest the smallest budget
    holds (SplitLoRA's rule); latency never goes deeper than budget."""
    fleet = explicit_fleet(memory, flops[: len(memory)])
    budget, weakest, latency = (hsplit(split_objective=o) for o in ("budget", "weakest", "latency"))
    by_budget = splits_of(budget.configure(0, fleet))
    for c, k in enumerate(by_budget):
        holds = [j for j in range(1, MINILM.n_layers) if budget.memory(j, {}) <= memory[c] * GIB]
        assert k == (holds[-1] if holds else 0)
    held = [j for j in range(1, MINILM.n_layers) if budget.memory(j, {}) <= min(memory) * GIB]
    expected = held[-1] if held else 1
    assert splits_of(weakest.configure(0, fleet)) == [expected if k >= expected else 0 for k in by_budget]
    assert all(a <= b for a, b in zip(splits_of(latency.configure(0, fleet)), by_budget, strict=True))


@settings(max_examples=20, deadline=None)
@given(memory=st.lists(st.floats(0.05, 0.3), min_size=2, max_size=5),
       flops=st.lists(st.floats(1e11, 2e13), min_size=5, max_size=5), share=st.floats(0.01, 1.0),
       objective=st.sampled_from(["latency", "budget"]))
def test_the_drift_cap_keeps_every_device_within_its_share_of_the_blocks(memory, flops, share, objective) -> None:
    """max_client_share: no device holds more than max(1, floor(share L)) blocks; under `budget` the split is
    the uncapped one cut down to the cap (a device that held any split still holds one)."""
    fleet = explicit_fleet(memory, flops[: len(memory)])
    cap = max(1, math.floor(share * MINILM.n_layers + 1e-9))
    capped = splits_of(hsplit(split_objective=objective, max_client_share=share).configure(0, fleet))
    free = splits_of(hsplit(split_objective=objective).configure(0, fleet))
    assert all(k <= cap for k in capped)
    assert [k > 0 for k in capped] == [k > 0 for k in free]
    if objective == "budget":
        assert capped == [min(k, cap) for k in free]


def test_uniform_ranks_spend_the_budget_on_one_rank_and_probe_nothing() -> None:
    strategy = hsplit(rank_rule="uniform", split_objective="budget")
    fleet = explicit_fleet([0.11, 0.2, 0.3], [1e12] * 3)
    assignment = strategy.configure(0, fleet)
    assert strategy.capability(ImportanceCalibration) is None
    for c, j in enumerate(assignment.index):
        config = assignment.configs[j]
        k = config.split_point
        device = {r for b in range(k) for r in config.ranks[b]}
        assert len(device) == 1  # every candidate matrix on the device the same rank
        level = device.pop()
        higher = [lv for lv in (2, 4, 8, 16) if lv > level]
        if higher:  # the next level of Q would not fit
            keys = [key for key in strategy.importance.keys if key[0] < k]
            assert strategy.memory(k, dict.fromkeys(keys, higher[0])) > fleet.memory_gb[c] * GIB
    assert len(set(strategy.server_ranks.values())) == 1


def test_zero_padded_average_is_the_product_of_padded_averages_and_differs_from_naa() -> None:
    a, b = factors(2, 1), factors(4, 2)
    trained = [Trained(0, 1.0, {(0, "q"): a}, {}), Trained(1, 3.0, {(0, "q"): b}, {})]
    merged = zero_padded_average(trained)[(0, "q")]
    A = torch.zeros(4, a.A.shape[1])
    B = torch.zeros(a.B.shape[0], 4)
    A[:2] += 0.25 * a.scale * a.A
    A += 0.75 * b.scale * b.A
    B[:, :2] += 0.25 * a.B
    B += 0.75 * b.B
    assert torch.allclose(merged.scale * merged.B @ merged.A, B @ A)
    exact = stack(trained)[(0, "q")]
    assert torch.allclose(exact.scale * exact.B @ exact.A, 0.25 * a.delta() + 0.75 * b.delta(), atol=1e-6)
    assert not torch.allclose(merged.scale * merged.B @ merged.A, exact.scale * exact.B @ exact.A, atol=1e-4)


def test_keeping_the_optimiser_across_restarts_is_a_setting() -> None:
    assert not hsplit().keeps_optimizer() and hsplit(optimizer_on_restart="keep").keeps_optimizer()
