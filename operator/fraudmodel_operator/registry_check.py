"""Is every version a FraudModel names ready to serve? Checked against the model registry.

A version passes when ``models/<version>/metadata.json`` exists in the registry
(:class:`fraudstack.adapters.registry.ModelRegistry`), its ``feature_set_version`` is the
feature set this code computes (:data:`fraudstack.features.definitions.FEATURE_SET_VERSION`):
a model trained on other features would score garbage from the online store; and every file it
lists has the sha256 it records (:meth:`~fraudstack.adapters.registry.ModelRegistry.verify`).
The inference service checks the hashes in the same way when it loads a version and refuses
one that fails, so such a version never serves: as a rollout's candidate it would get no
traffic, and its gates would wait for requests forever. A candidate that fails is therefore
rejected (:attr:`~fraudmodel_operator.resource.Problem.rejects_candidate`), and the rollout
rolls it back; a stable version that fails is an ordinary problem, for a person.

Published versions are immutable, so a version that passed once is remembered and neither read
nor hashed again; a failing one is read again on every look, so the FraudModel recovers by
itself as soon as the training job publishes the missing version.
"""

from __future__ import annotations

import asyncio

from fraudmodel_operator.resource import Problem, Spec
from fraudstack.adapters.registry import ModelRegistry
from fraudstack.errors import ModelError, ModelIntegrityError, ModelNotFound
from fraudstack.features.definitions import FEATURE_SET_VERSION

VERSION_NOT_FOUND = "VersionNotFound"
FEATURE_SET_MISMATCH = "FeatureSetMismatch"
REGISTRY_UNREADABLE = "RegistryUnreadable"
ARTIFACT_CORRUPT = "ArtifactCorrupt"


class RegistryCheck:
    """Checks versions against one registry root; remembers the versions that passed."""

    def __init__(self, registry_root: str, feature_set_version: str = FEATURE_SET_VERSION) -> None:
        self.registry = ModelRegistry(registry_root)
        self.feature_set_version = feature_set_version
        self._good: set[str] = set()

    async def check(self, spec: Spec) -> Problem | None:
        """None when every version of ``spec`` is fine, else the first reason and every message.

        A rejected candidate stays a rejection only alone: with the stable version at fault too,
        there is nothing sound to roll back to, and the joined problem is an ordinary one.
        """
        roles = [("stable", spec.stable)]
        if spec.candidate:
            roles.append(("candidate", spec.candidate))
        found = [await asyncio.to_thread(self.problem, role, version) for role, version in roles]
        problems = [problem for problem in found if problem is not None]
        if not problems:
            return None
        if len(problems) == 1:
            return problems[0]
        return Problem(problems[0].reason, "; ".join(problem.message for problem in problems))

    def problem(self, role: str, version: str) -> Problem | None:
        """What is wrong with ``version`` (blocking: reads the registry's files, and hashes them
        until the version has passed once)."""
        if version in self._good:
            return None
        try:
            metadata = self.registry.metadata(version)
        except ModelNotFound:
            return Problem(
                VERSION_NOT_FOUND,
                f"{role} version {version} is not in the model registry at {self.registry.root}",
            )
        except (ModelError, OSError) as exc:
            return Problem(REGISTRY_UNREADABLE, f"{role} version {version}: {exc}")
        if metadata.feature_set_version != self.feature_set_version:
            return Problem(
                FEATURE_SET_MISMATCH,
                f"{role} version {version} was trained on feature set "
                f"{metadata.feature_set_version}; the online store serves "
                f"{self.feature_set_version}",
            )
        try:
            self.registry.verify(version)
        except ModelIntegrityError as exc:  # metadata.json was read above: a file is at fault
            return Problem(
                ARTIFACT_CORRUPT,
                f"{role} version {version} cannot be loaded: {exc}",
                rejects_candidate=role == "candidate",
            )
        except (ModelError, OSError) as exc:
            return Problem(REGISTRY_UNREADABLE, f"{role} version {version}: {exc}")
        self._good.add(version)
        return None
