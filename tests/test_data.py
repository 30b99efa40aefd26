"""Data sets read, checked and encoded; partitions put every sample on exactly one client, deterministically."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hsplit_actors.data import DATA_DIR
from hsplit_actors.data.datasets import IGNORE, encode_e2e, read_e2e, read_sst2
from hsplit_actors.data.partition import partition
from hsplit_actors.data.tokenizers import gpt2_tokenizer
from hsplit_actors.errors import ScenarioError


def test_shipped_files_read_with_their_documented_sizes() -> None:
    assert len(read_sst2(DATA_DIR / "sst2" / "train.tsv")) == 60_614
    assert len(read_sst2(DATA_DIR / "sst2" / "test.tsv")) == 872
    dev = read_e2e(DATA_DIR / "e2e" / "devset.csv")
    assert len(dev) == 4672 and dev["mr"].nunique() == 547
    assert {"name", "eatType", "area", "food"} <= set(dev.columns)
    assert (DATA_DIR / "SOURCES.md").is_file()


def test_e2e_attributes_include_multi_word_keys() -> None:
    from hsplit_actors.data import E2E_ATTRIBUTES

    dev = read_e2e(DATA_DIR / "e2e" / "devset.csv")
    assert set(dev.columns[2:]) == set(E2E_ATTRIBUTES)
    assert dev["customer rating"].notna().any()


def test_gpt2_tokenizer_is_the_real_one() -> None:
    tok = gpt2_tokenizer()
    assert len(tok) == 50257 and tok.encode("Hello world") == [15496, 995]


def test_e2e_loss_covers_the_text_only() -> None:
    tok = gpt2_tokenizer()
    frame = read_e2e(DATA_DIR / "e2e" / "devset.csv").head(20)
    enc = encode_e2e(frame, tok, seq_len=80)
    for i in range(20):
        labelled = enc.labels[i][enc.labels[i] != IGNORE]
        assert tok.decode(labelled) == " " + frame["ref"].iloc[i] + tok.eos_token
        assert enc.attention_mask[i].sum() == len(tok.encode(frame["mr"].iloc[i] + " ||")) + len(labelled)


@pytest.mark.parametrize("content, message", [
    ("text\tlabel\nfine\t1\n", ":1: expected the header"),
    ("sentence\tlabel\ngood\t1\nbad line without tab\n", ":3: expected 'sentence<TAB>0|1'"),
    ("sentence\tlabel\ngood\t2\n", ":2: expected 'sentence<TAB>0|1'"),
])
def test_malformed_sst2_is_named_by_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(ScenarioError, match=message):
        read_sst2(path)


def test_malformed_or_missing_e2e(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("meaning,text\nx,y\n")
    with pytest.raises(ScenarioError, match="expected columns 'mr' and 'ref'"):
        read_e2e(bad)
    bad.write_text('mr,ref\n"name[A]",ok\n"no attributes here",text\n')
    with pytest.raises(ScenarioError, match=":3: expected a meaning representation"):
        read_e2e(bad)
    with pytest.raises(ScenarioError, match="does not exist"):
        read_e2e(tmp_path / "missing.csv")


@settings(max_examples=40, deadline=None)
@given(n=st.integers(20, 400), clients=st.integers(1, 12), kind=st.sampled_from(["iid", "dirichlet", "quantity"]),
       alpha=st.floats(0.05, 10), seed=st.integers(0, 10_000))
def test_every_sample_lands_on_exactly_one_client(n, clients, kind, alpha, seed) -> None:
    keys = np.random.default_rng(seed).integers(0, 3, n)
    parts = partition(kind, n, clients, seed, alpha, keys)
    assert len(parts) == clients
    everything = np.concatenate(parts)
    assert len(everything) == n and np.array_equal(np.sort(everything), np.arange(n))
    again = partition(kind, n, clients, seed, alpha, keys)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert min(len(p) for p in parts) >= 1, "a client with no sample cannot take a step (run used to hang)"


def test_dirichlet_skews_labels_and_quantity_skews_sizes() -> None:
    labels = read_sst2(DATA_DIR / "sst2" / "test.tsv")["label"].to_numpy()

    def spread(parts):  # how far clients' positive share strays from the global one
        return np.std([labels[p].mean() for p in parts if len(p)])

    skewed = partition("dirichlet", len(labels), 5, seed=0, alpha=0.1, keys=labels)
    even = partition("iid", len(labels), 5, seed=0)
    assert spread(skewed) > 3 * spread(even)
    sizes = [len(p) for p in partition("quantity", 1000, 5, seed=0, alpha=0.3)]
    assert max(sizes) > 3 * min(sizes)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(10, 500), held=st.integers(0, 9), seed=st.integers(0, 2**32))
def test_the_validation_split_never_meets_the_clients_samples(n, held, seed) -> None:
    from hsplit_actors.data.samples import draw_samples

    wanted = n - held
    validation, used = draw_samples(n, held, wanted, np.random.default_rng(seed))
    assert len(validation) == held and len(used) == wanted
    assert not set(validation.tolist()) & set(used.tolist())
    # nothing held out: the clients' rows are the ones drawn before validation splits existed
    _, before = draw_samples(n, 0, wanted // 2, np.random.default_rng(seed))
    assert before.tolist() == np.sort(np.random.default_rng(seed).permutation(n)[: wanted // 2]).tolist()


def test_evaluating_on_the_validation_split_reads_training_rows() -> None:
    from hsplit_actors.scenario import Scenario
    from hsplit_actors.training.setup import training_data
    from tests.conftest import tiny_training_scenario

    raw = tiny_training_scenario()
    raw["data"] = raw["data"] | {"validation_samples": 40}
    on_test = training_data(Scenario.model_validate(raw), 4)
    raw["train"] = raw["train"] | {"evaluate_on": "validation"}
    on_validation = training_data(Scenario.model_validate(raw), 4)
    assert len(on_validation.test["labels"]) == 40 and len(on_test.test["labels"]) == 64
    assert (on_validation.train["input_ids"] == on_test.train["input_ids"]).all()  # the same clients' data
    assert (on_validation.test["input_ids"][:40] != on_test.test["input_ids"][:40]).any()  # not the test set


def _e2e_scenario(seq_len: int):
    from hsplit_actors.scenario import Scenario
    from tests.conftest import SMALL_GPT2, tiny_training_scenario

    return Scenario.model_validate(tiny_training_scenario(
        model=SMALL_GPT2 | {"weights": "random"}, method={"name": "sfl", "split_point": 1, "rank": 4},
        data={"dataset": "e2e", "batch_size": 4, "seq_len": seq_len, "samples_per_client": 16}))


def test_e2e_samples_cut_before_their_text_are_counted_and_none_left_is_an_error() -> None:
    """A prompt (meaning representation) that fills seq_len leaves its sample nothing to learn or score: counted
    in a warning (train and evaluation), and an error when no training sample keeps any of its text."""
    from hsplit_actors.data import TruncatedTextWarning
    from hsplit_actors.training.setup import training_data

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # long enough for every sample: nothing said
        full = training_data(_e2e_scenario(128), 4)
    starts = (full.train["labels"] == IGNORE).argmin(axis=1)  # where each sample's text starts: its prompt's length
    for seq_len in (24, 40):
        expected = int((starts >= seq_len).sum())
        assert 0 < expected < len(starts), "the bound must cut some samples and spare others"
        with pytest.warns(TruncatedTextWarning, match=rf"data.seq_len {seq_len} ends {expected} of {len(starts)} "
                                                      r"training samples and \d+ of \d+ evaluation samples"):
            cut = training_data(_e2e_scenario(seq_len), 4)
        assert int(((cut.train["labels"] != IGNORE).sum(axis=1) == 0).sum()) == expected
    with pytest.raises(ScenarioError, match="^data.seq_len: 8 leaves no token of the text in any of the 64 training"):
        training_data(_e2e_scenario(8), 4)
