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
        forest_weight: float = 1.0,
        linear: bytes = b"",
        linear_weight: float = 0.0,
        intercept: float = 0.0,
    ) -> None: ...
    def score(self, row: Sequence[SupportsFloat]) -> float: ...
    def score_many(self, rows: Sequence[Sequence[SupportsFloat]]) -> list[float]: ...
    @property
    def sizes(self) -> tuple[int, int, int]:
        """(trees, nodes, features)"""
    @property
    def blended(self) -> bool:
        """Whether a logistic-regression term is added to the trees."""
