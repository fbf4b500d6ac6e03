"""Which operator Deployment reconciles an object: shards by a stable hash of its name.

`sluice run --shard I/N` reconciles only the Rollouts, Applications and
SidecarSets whose key (``namespace/name``, or the name alone for a
cluster-scoped SidecarSet) hashes to I modulo N. The hash is SHA-256, not
Python's ``hash()`` (salted per process), so every process, of every version,
agrees on who owns what. Each shard elects its own leader through its own Lease
(`foundation.leadership`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def object_shard(namespace: str, name: str, count: int) -> int:
    """The shard (0..count-1) that owns the object `namespace/name` (`name` when cluster-scoped)."""
    key = f"{namespace}/{name}" if namespace else name
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`; the default, 0 of 1, owns everything."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"a shard count must be at least 1, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: the index must be from 0 to {self.count - 1}")

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def owns(self, namespace: str, name: str) -> bool:
        return not self.sharded or object_shard(namespace, name, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``I/N`` (e.g. ``0/3``) -> Shard; ValueError with a one-line reason otherwise."""
    match = _SPEC.match(text)
    if not match:
        raise ValueError(f"{text!r} is not I/N (e.g. 0/3: the first of three shards)")
    return Shard(int(match.group(1)), int(match.group(2)))
