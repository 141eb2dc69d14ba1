"""Sharding by namespace: which replica set (shard) serves which namespace.

As kube-state-metrics' ``--shard/--total-shards``, but keyed by the namespace (not by
each object's uid), so every object of a namespace (its policies, workloads, Pods and
Remediations) lives in one shard and the per-namespace guardrails keep their meaning.

A namespace belongs to shard ``fnv1a_64(namespace) % total``: FNV-1a, 64 bits, over
the name's UTF-8 bytes. It is stable across processes, machines and Python versions
(never Python's ``hash()``, which is randomised per process). Pure: no I/O.

``python -m selfheal.sharding --total-shards 2 shop payments`` prints each namespace's
shard.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from collections.abc import Sequence

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_MASK = 2**64 - 1


def fnv1a_64(data: bytes) -> int:
    """FNV-1a, 64 bits (http://www.isthe.com/chongo/tech/comp/fnv/)."""
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & _MASK
    return h


@functools.lru_cache(maxsize=65536)
def shard_of(namespace: str, total: int) -> int:
    """The shard (0 .. total-1) that serves ``namespace``. Cached: a cluster has few
    namespaces and every Pod event asks."""
    if total < 1:
        raise ValueError(f"total shards must be at least 1, not {total}")
    return fnv1a_64(namespace.encode()) % total


@dataclasses.dataclass(frozen=True, kw_only=True)
class Shard:
    """This process's shard: ``index`` of ``total``. The default (0 of 1) owns all."""

    index: int = 0
    total: int = 1

    def __post_init__(self) -> None:
        if self.total < 1:
            raise ValueError(f"--total-shards must be at least 1, not {self.total}")
        if not 0 <= self.index < self.total:
            raise ValueError(
                f"--shard must be between 0 and --total-shards - 1 ({self.total - 1}), "
                f"not {self.index}"
            )

    @property
    def sharded(self) -> bool:
        return self.total > 1

    def owns(self, namespace: str | None) -> bool:
        """True when ``namespace`` is this shard's. A cluster-scoped object (no
        namespace) and everything when unsharded belong to every shard."""
        if self.total == 1 or not namespace:
            return True
        return shard_of(namespace, self.total) == self.index

    def name(self, base: str) -> str:
        """``base`` unsharded (back-compatible), ``<base>-shard-<index>-of-<total>``
        otherwise: what each shard must own alone (its Lease, its finalizer)."""
        return base if self.total == 1 else f"{base}-shard-{self.index}-of-{self.total}"

    def lease_name(self, base: str) -> str:
        """The shard's leader election Lease, so each shard elects its own leader."""
        return self.name(base)

    def __str__(self) -> str:
        return f"{self.index}-of-{self.total}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m selfheal.sharding",
        description="Print the shard that serves each namespace.",
    )
    p.add_argument("--total-shards", type=int, required=True)
    p.add_argument("namespaces", nargs="+")
    args = p.parse_args(argv)
    if args.total_shards < 1:
        p.error("--total-shards must be at least 1")
    for ns in args.namespaces:
        print(f"{ns}\t{shard_of(ns, args.total_shards)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Shard", "fnv1a_64", "shard_of"]
