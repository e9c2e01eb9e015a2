"""Types of the C extension ``fraudstack._treewalk`` (see ``_treewalk.c`` and fraudstack.forest)."""

from collections.abc import Sequence
from typing import SupportsFloat

class Forest:
    def __init__(
        self,
        nodes: bytes,
        roots: bytes,
        feature_count: int,
        base: float = 0.0,
        logistic: bool = False,
    ) -> None: ...
    def score(self, row: Sequence[SupportsFloat]) -> float: ...
    def score_many(self, rows: Sequence[Sequence[SupportsFloat]]) -> list[float]: ...
    @property
    def sizes(self) -> tuple[int, int, int]:
        """(trees, nodes, features)"""
