"""E2E (meaning representation -> text, a causal-LM task) and SST-2 (sentence -> label): reading, checking and
encoding into fixed-length tensors."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from hsplit_actors.errors import ScenarioError

if TYPE_CHECKING:  # pandas only where files are read: hosts import this module for `Encoded` alone
    import pandas as pd

E2E_SEPARATOR = " ||"  # prompt = MR + separator; the model learns to continue with the reference text
IGNORE = -100


@dataclass
class Encoded:
    """A data set as tensors: `labels` are token labels (-100 = no loss) or one class per sample."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.input_ids)

    def take(self, index) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(index)
        return self.input_ids[index], self.attention_mask[index], self.labels[index]


def _missing(path: Path, what: str) -> ScenarioError:
    return ScenarioError(f"{what} file {str(path)!r} does not exist; fix data.path", field="data.path")


def read_sst2(path: str | Path) -> pd.DataFrame:
    """`sentence<TAB>label` with a header line; labels 0/1. Malformed lines are named by number."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise _missing(path, "SST-2")
    sentences, labels = [], []
    with path.open(encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:2] != ["sentence", "label"]:
            raise ScenarioError(f"{path}:1: expected the header 'sentence<TAB>label', got {header!r}",
                                field="data.path")
        for number, line in enumerate(f, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2 or parts[1].strip() not in ("0", "1"):
                raise ScenarioError(f"{path}:{number}: expected 'sentence<TAB>0|1', got {line.strip()[:60]!r}",
                                    field="data.path")
            sentences.append(parts[0].strip())
            labels.append(int(parts[1]))
    return pd.DataFrame({"sentence": sentences, "label": np.array(labels, dtype=np.int64)})


_ATTRIBUTE = re.compile(r"([A-Za-z][\w ]*)\[([^\]]*)\]")  # "customer rating[high]" has a space


def read_e2e(path: str | Path) -> pd.DataFrame:
    """E2E CSV (`mr`, `ref`); adds one column per MR attribute (name, eatType, food, area, ...)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise _missing(path, "E2E")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"mr", "ref"} <= set(reader.fieldnames):
            raise ScenarioError(f"{path}:1: expected columns 'mr' and 'ref', got {reader.fieldnames!r}",
                                field="data.path")
        rows = []
        for number, row in enumerate(reader, start=2):
            if not row["mr"] or not _ATTRIBUTE.search(row["mr"]) or not row["ref"]:
                raise ScenarioError(f"{path}:{number}: expected a meaning representation like 'name[X], "
                                    f"area[Y]' and a text, got {row['mr'][:60]!r}", field="data.path")
            rows.append((row["mr"], row["ref"]))
    frame = pd.DataFrame(rows, columns=["mr", "ref"])
    attributes = pd.DataFrame([dict(_ATTRIBUTE.findall(mr)) for mr in frame["mr"]])
    return pd.concat([frame, attributes], axis=1)


def encode_sst2(frame: pd.DataFrame | dict, tokenizer, seq_len: int) -> Encoded:
    """`frame`: `read_sst2`'s frame, or its columns as lists (`data.samples`)."""
    enc = tokenizer(list(frame["sentence"]), padding="max_length", truncation=True, max_length=seq_len,
                    return_tensors="pt")
    return Encoded(enc["input_ids"], enc["attention_mask"], torch.as_tensor(np.array(frame["label"], dtype=np.int64)))


def e2e_prompt(mr: str) -> str:
    return mr + E2E_SEPARATOR


def encode_e2e(frame: pd.DataFrame | dict, tokenizer, seq_len: int) -> Encoded:
    """Prompt (MR + separator) then ` text<eos>`; the loss covers the text tokens only. `frame`: `read_e2e`'s
    frame, or its columns as lists (`data.samples`)."""
    eos = tokenizer.eos_token_id
    rows = len(frame["mr"])
    ids = torch.full((rows, seq_len), eos, dtype=torch.long)
    mask = torch.zeros((rows, seq_len), dtype=torch.long)
    labels = torch.full((rows, seq_len), IGNORE, dtype=torch.long)
    for i, (mr, ref) in enumerate(zip(frame["mr"], frame["ref"], strict=True)):
        prompt = tokenizer.encode(e2e_prompt(mr))
        text = tokenizer.encode(" " + ref) + [eos]
        tokens = (prompt + text)[:seq_len]
        n = len(tokens)
        ids[i, :n] = torch.tensor(tokens)
        mask[i, :n] = 1
        labels[i, len(prompt):n] = torch.tensor(tokens[len(prompt):], dtype=torch.long)
    return Encoded(ids, mask, labels)


def e2e_references(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Distinct MRs in first-seen order and all references of each (E2E scores against every reference)."""
    grouped = frame.groupby("mr", sort=False)["ref"].apply(list)
    return list(grouped.index), list(grouped.values)
