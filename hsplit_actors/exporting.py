"""The fine-tuned model out of a run, in the forms transformers and peft load: a peft adapter directory where the
method ends with one global adapter set, a merged `save_pretrained` directory where it folded updates into the
base (NAA, FLoRA) or on request; the tokenizer beside it.

A run keeps the final global state in `model/final.pt` (adapters, trained head, the aggregates merged into the
base, in order); `export` rebuilds the model from the scenario and that state exactly as the hosts hold it, so the
exported model scores the run's last evaluation (tests/test_export.py, with plain transformers and peft).
"""

from __future__ import annotations

from pathlib import Path

from hsplit_actors.errors import ScenarioError

FINAL = Path("model") / "final.pt"


def save_final(run_dir: str | Path, factors: dict, head: dict, merges: list) -> Path:
    """The global model after the last aggregation, as plain tensors keyed by (block, matrix)."""
    import torch

    path = Path(run_dir) / FINAL
    path.parent.mkdir(exist_ok=True)
    plain = {key: (f.A.cpu(), f.B.cpu(), float(f.alpha)) for key, f in factors.items()}
    stacked = [{key: (f.A.cpu(), f.B.cpu(), float(f.alpha)) for key, f in merge.items()} for merge in merges]
    torch.save({"factors": plain, "head": {k: v.cpu() for k, v in head.items()}, "merges": stacked}, path)
    return path


def _model(run_dir: Path):
    """The scenario's frozen model (fp32, as the hosts build it), the final state, and where its base lives."""
    import torch

    from hsplit_actors.scenario import load_scenario
    from hsplit_actors.scenario.load import architecture
    from hsplit_actors.training.setup import base_model

    if not (run_dir / FINAL).is_file():
        raise ScenarioError(f"{run_dir} holds no final model ({FINAL} is missing): export needs a finished "
                            "`hsplit run` directory written with train.export on", field="RUN_DIR")
    scenario = load_scenario(run_dir / "scenario.yaml")
    model, _, _ = base_model(scenario, architecture(scenario))
    model.float()
    return scenario, model, torch.load(run_dir / FINAL, weights_only=False, map_location="cpu")


def _fold_merges(model, merges: list) -> None:
    """Base + the fp64 sum of every merged aggregate, cast back: what a host's `_materialise` holds."""
    import torch

    from hsplit_actors.model.lora import base_weight

    total: dict = {}
    for stacked in merges:
        for key, (A, B, alpha) in stacked.items():
            delta = (alpha / A.shape[0]) * (B.to(torch.float64) @ A.to(torch.float64))
            total[key] = total[key] + delta if key in total else delta
    with torch.no_grad():
        for key, delta in total.items():
            weight = base_weight(model, key)
            weight.copy_((weight.to(torch.float64) + delta).to(weight.dtype))


def _load_head(model, head: dict) -> None:
    import torch

    from hsplit_actors.training.slots import head_parameters

    params = head_parameters(model)
    with torch.no_grad():
        for name, value in head.items():
            params[name].copy_(value)


def _tokenizer(scenario):
    from hsplit_actors.data.tokenizers import bert_tokenizer, gpt2_tokenizer

    return bert_tokenizer() if scenario.data.dataset == "sst2" else gpt2_tokenizer()


def _base_source(scenario, model, out: Path) -> str:
    """Where the adapter's base model is: the scenario's directory or MiniLM's package, else (random weights,
    which exist nowhere else) a copy written beside the adapter."""
    from hsplit_actors.model.loading import minilm_dir

    spec = scenario.model
    if spec.path:
        return str(Path(spec.path).resolve())
    if spec.preset == "minilm-l6" and spec.weights != "random" and not spec.overrides:
        return str(minilm_dir())
    model.save_pretrained(out / "base")
    return str((out / "base").resolve())


def export(run_dir: str | Path, out: str | Path | None = None, merged: bool = False) -> Path:
    """Write the run's final model under `out` (default RUN_DIR/model): `adapter/` (peft) or `merged/`
    (`save_pretrained`), each with the tokenizer. Returns the directory written."""
    from hsplit_actors.model.loading import _quiet_transformers

    run_dir = Path(run_dir)
    with _quiet_transformers():  # no progress bars from save_pretrained
        return _export(run_dir, Path(out) if out is not None else run_dir / "model", merged)


def _export(run_dir: Path, out: Path, merged: bool) -> Path:
    import torch

    from hsplit_actors.model.families import family_of
    from hsplit_actors.model.lora import LoRAFactors, module_name

    scenario, model, final = _model(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    family = family_of(model)
    factors = {key: LoRAFactors(A, B, alpha) for key, (A, B, alpha) in final["factors"].items()}
    # GPT-2's query/key/value adapters sit on one fused matrix in transformers: no peft form, so merged
    merged = merged or bool(final["merges"]) or not factors or family.name == "gpt2"
    if merged:
        _fold_merges(model, final["merges"])
        _load_head(model, final["head"])
        with torch.no_grad():
            for key, f in factors.items():
                weight = model.get_submodule(module_name(model, key)).weight
                weight.add_(f.delta().to(weight.dtype))
        family.restore(model)
        target = out / "merged"
        model.save_pretrained(target)
    else:
        base = _base_source(scenario, model, out)
        _load_head(model, final["head"])
        target = out / "adapter"
        _save_adapter(model, factors, base, target)
    _tokenizer(scenario).save_pretrained(target)
    return target


def _save_adapter(model, factors: dict, base: str, target: Path) -> None:
    """A peft LoRA directory: one rank and alpha per matrix (rank_pattern / alpha_pattern), the trained head as
    modules_to_save."""
    import re

    import torch
    from peft import LoraConfig, get_peft_model

    from hsplit_actors.model.families import family_of
    from hsplit_actors.model.lora import module_name

    names = {key: module_name(model, key) for key in factors}
    head = [name for name, m in model.named_modules() if any(m is h for h in family_of(model).trainable_head(model))]
    config = LoraConfig(
        r=8, lora_alpha=16, bias="none", target_modules=sorted(names.values()),
        rank_pattern={re.escape(names[k]): f.rank for k, f in factors.items()},
        alpha_pattern={re.escape(names[k]): f.alpha for k, f in factors.items()},
        modules_to_save=head or None, base_model_name_or_path=base,
    )
    peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = base  # get_peft_model resets it from the model
    with torch.no_grad():
        for key, f in factors.items():
            layer = peft_model.base_model.model.get_submodule(names[key])
            layer.lora_A["default"].weight.copy_(f.A)
            layer.lora_B["default"].weight.copy_(f.B)
    peft_model.save_pretrained(target)
