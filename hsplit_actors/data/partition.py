"""Split a data set across clients, seeded: iid, Dirichlet(alpha) by a label or attribute, or quantity skew.
Every sample lands on exactly one client (tests/test_data.py holds each partitioner to that)."""

from __future__ import annotations

import numpy as np


def iid(n_samples: int, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [np.sort(part) for part in np.array_split(rng.permutation(n_samples), n_clients)]


def dirichlet(keys: np.ndarray, n_clients: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Per key value, its samples go to clients in Dirichlet(alpha) proportions (small alpha: very skewed)."""
    parts: list[list[int]] = [[] for _ in range(n_clients)]
    for value in np.unique(keys):
        members = rng.permutation(np.flatnonzero(keys == value))
        shares = rng.dirichlet(np.full(n_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for client, chunk in enumerate(np.split(members, cuts)):
            parts[client].extend(chunk.tolist())
    # A small alpha can leave a client with nothing, and a client with no data cannot take a single step: each
    # empty client takes one sample from the largest (only such clients' partitions differ from the plain draw).
    for client in range(n_clients):
        if not parts[client]:
            largest = max(range(n_clients), key=lambda c: len(parts[c]))
            if len(parts[largest]) < 2:
                raise ValueError(f"{len(keys)} samples cannot give each of {n_clients} clients one")
            parts[client].append(parts[largest].pop())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def quantity_skew(n_samples: int, n_clients: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Client sizes in Dirichlet(alpha) proportions, each client at least one sample."""
    if n_samples < n_clients:
        raise ValueError(f"{n_samples} samples cannot give each of {n_clients} clients one")
    shares = rng.dirichlet(np.full(n_clients, alpha))
    sizes = 1 + np.floor(shares * (n_samples - n_clients)).astype(int)
    sizes[np.argmax(shares)] += n_samples - sizes.sum()
    order = rng.permutation(n_samples)
    return [np.sort(part) for part in np.split(order, np.cumsum(sizes)[:-1])]


def partition(kind: str, n_samples: int, n_clients: int, seed: int, alpha: float = 0.5,
              keys: np.ndarray | None = None) -> list[np.ndarray]:
    """Indices of each client's samples."""
    rng = np.random.default_rng(seed)
    if kind == "iid":
        return iid(n_samples, n_clients, rng)
    if kind == "dirichlet":
        if keys is None:
            raise ValueError("a Dirichlet partition needs the key (label or attribute) of every sample")
        return dirichlet(np.asarray(keys), n_clients, alpha, rng)
    if kind == "quantity":
        return quantity_skew(n_samples, n_clients, alpha, rng)
    raise ValueError(f"unknown partition {kind!r}; use iid, dirichlet or quantity")
