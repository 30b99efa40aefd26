"""The model out of a run: loaded with plain transformers and peft, nothing of this package, it scores exactly the
run's last evaluation; merged and adapter forms agree; `hsplit export` writes either for a finished run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ENV_OFFLINE, REPO, tiny_training_scenario

EVAL = 64


def _score_with_plain_transformers(model_dirs: list[Path], seq_len: int, n: int) -> list[tuple[float, float]]:
    """Accuracy and mean loss of each model directory on the first `n` rows of SST-2's evaluation file, in one
    fresh interpreter that never imports hsplit_actors."""
    script = f"""
import csv, json, sys, torch
from pathlib import Path
from transformers import AutoModelForSequenceClassification, AutoTokenizer
rows = list(csv.reader(open({str(REPO / "data" / "sst2" / "test.tsv")!r}), delimiter="\\t"))[1:{n} + 1]
labels = torch.tensor([int(r[1]) for r in rows])
for d in map(Path, {[str(d) for d in model_dirs]!r}):
    if (d / "adapter_config.json").exists():
        from peft import PeftModel
        base = json.loads((d / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base), d)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(d)
    tok = AutoTokenizer.from_pretrained(d)
    enc = tok([r[0] for r in rows], padding="max_length", truncation=True, max_length={seq_len}, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(input_ids=enc["input_ids"][i:i + 64],
                                  attention_mask=enc["attention_mask"][i:i + 64]).logits
                            for i in range(0, len(rows), 64)])
    loss = float(torch.nn.functional.cross_entropy(logits, labels))
    print(float((logits.argmax(-1) == labels).float().sum()) / len(rows), loss)
assert "hsplit_actors" not in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=model_dirs[0], env=ENV_OFFLINE, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return [tuple(map(float, line.split())) for line in done.stdout.strip().splitlines()[-len(model_dirs):]]


@pytest.mark.parametrize("method", [
    {"name": "sfl", "split_point": 1, "rank": 4, "targets": ["query", "value"]},  # one global adapter set: peft
    {"name": "flora", "rank": 4, "targets": ["query", "value"]},  # stacking, merged into the base: merged
], ids=["adapter", "merged"])
def test_the_exported_model_scores_the_runs_final_evaluation(method: dict, tmp_path: Path) -> None:
    from hsplit_actors import export, run

    raw = tiny_training_scenario(rounds=2, method=method, train={"eval_samples": EVAL, "lr": 0.01, "local": True})
    done = run(raw, tmp_path / "run")
    kind = "adapter" if method["name"] == "sfl" else "merged"
    assert done.meta["model"] == f"model/{kind}"
    dirs = [done.directory / done.meta["model"]]
    if kind == "adapter":  # the same model with the adapters folded in (what `hsplit export --merged` writes)
        dirs.append(export(done.directory, tmp_path / "m", merged=True))
    last = done.rounds.iloc[-1]
    for accuracy, loss in _score_with_plain_transformers(dirs, raw["data"]["seq_len"], EVAL):
        assert accuracy == last["eval_metric"] and loss == pytest.approx(last["eval_loss"], rel=1e-5, abs=1e-6)


def test_export_refuses_what_is_not_a_finished_run(tmp_path: Path, capsys) -> None:
    from hsplit_actors.cli import main

    assert main(["export", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: RUN_DIR: {tmp_path} is not a finished run directory"


def test_a_gpt2_run_exports_a_merged_model_transformers_loads_as_gpt2(tmp_path: Path) -> None:
    """GPT-2's q/k/v adapters live on one fused matrix in transformers: exported merged, back in its own Conv1D
    layout, with the run's evaluation loss."""
    import warnings

    import torch
    import yaml
    from transformers import AutoModelForCausalLM

    from hsplit_actors.scenario import parse_scenario
    from hsplit_actors.training.run import run
    from hsplit_actors.training.setup import training_data

    raw = tiny_training_scenario(
        rounds=2, model={"preset": "gpt2-small", "weights": "random",
                         "overrides": {"n_layer": 3, "n_embd": 64, "n_head": 4}},
        data={"dataset": "e2e", "batch_size": 4, "seq_len": 32, "samples_per_client": 16},
        method={"name": "sfl", "split_point": 1, "rank": 4, "targets": ["query", "value", "ffn_in"]},
        train={"eval_samples": 32, "lr": 0.01, "local": True})
    scenario = parse_scenario(yaml.safe_dump(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        directory, tables, extra = run(scenario, tmp_path / "run")
    assert extra["model"] == "model/merged"
    model = AutoModelForCausalLM.from_pretrained(directory / extra["model"]).eval()
    assert type(model).__name__ == "GPT2LMHeadModel"
    test = training_data(scenario, 4).test
    ids, mask, labels = (torch.from_numpy(test[k]) for k in ("input_ids", "attention_mask", "labels"))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                             ignore_index=-100)
    assert float(loss) == pytest.approx(tables.rounds["eval_loss"].iloc[-1], rel=1e-5)


def test_tensorboard_event_files_hold_the_rounds_table(tmp_path: Path) -> None:
    """Every aggregation's values, stepped by version, timed by virtual time."""
    import pandas as pd
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hsplit_actors import run
    from hsplit_actors.tensorboard import per_aggregation

    raw = tiny_training_scenario(rounds=3, aggregation={"mode": "async", "concurrency": 3, "buffer": 2,
                                                        "aggregations": 3},
                                 train={"eval_samples": 32, "lr": 0.01, "local": True, "tensorboard": True})
    done = run(raw, tmp_path / "run")
    events = EventAccumulator(str(done.directory / "tensorboard")).Reload()
    expected = per_aggregation(done.tables)
    assert len(expected) == 3
    for column, tag in [("eval_metric", "eval/accuracy"), ("train_loss", "loss/train"),
                        ("staleness_max", "staleness/max"), ("queue_wait_s", "server/queue_wait_s"),
                        ("bytes_up", "traffic/bytes_up")]:
        points = events.Scalars(tag)
        assert [p.step for p in points] == expected["version"].tolist(), tag
        assert [p.wall_time for p in points] == pytest.approx(expected["t_end"].tolist()), tag
        assert [p.value for p in points] == pytest.approx(expected[column].astype(float).tolist(), rel=1e-6), tag
    assert not pd.isna(expected["eval_metric"]).any()


def test_exporting_draws_no_progress_bar(tmp_path: Path, capfd) -> None:
    """A model loaded from a directory: loading it inside the export used to switch transformers' progress bars
    back on, and the merged save drew one into the run's output."""
    from transformers import BertConfig, BertForSequenceClassification

    from hsplit_actors import run

    BertForSequenceClassification(BertConfig(num_hidden_layers=3, hidden_size=64, intermediate_size=128,
                                             num_attention_heads=4, num_labels=2)).save_pretrained(tmp_path / "tiny")
    raw = tiny_training_scenario(rounds=1, model={"path": str(tmp_path / "tiny")},
                                 method={"name": "flora", "rank": 4, "targets": ["query", "value"]},
                                 train={"eval_samples": 32, "lr": 0.01, "local": True})
    capfd.readouterr()
    done = run(raw, tmp_path / "run")
    assert done.meta["model"] == "model/merged"
    assert "Writing model shards" not in capfd.readouterr().err
