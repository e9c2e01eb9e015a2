"""The HTTP APIs fuzzed against their own OpenAPI schemas with schemathesis, on real servers.

Every generated request, valid or not, must get an answer the schema documents: never a 5xx,
a status code the operation lists, a body that matches the documented schema. The ingestion API
runs against the test devstack's Kafka; the inference service against a private Redis holding
the test table.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, BaseSchema, GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from fraudstack.devstack.redis_server import PrivateRedis
from support.ingest import running_ingest
from support.serving import start_service

pytestmark = pytest.mark.faults

EXAMPLES = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def ingest_schema(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BaseSchema]:
    log = tmp_path_factory.mktemp("fuzz-ingest") / "ingest.log"
    with running_ingest(kafka_bootstrap, f"fuzz-{uuid.uuid4().hex[:6]}.", log) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


@pytest.fixture(scope="module")
def serve_schema(
    serve_store: PrivateRedis, registry_root: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BaseSchema]:
    folder: Path = tmp_path_factory.mktemp("fuzz-serve")
    service = start_service(folder, serve_store.url, registry_root, workers=1)
    try:
        yield schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    finally:
        service.stop()


def refused_only_for_cents(response: schemathesis.Response) -> bool:
    """A schema-valid request may still be refused for one rule JSON Schema cannot state for
    binary numbers: an amount in whole cents (``fraudstack.events.Amount``). Nothing else."""
    if response.status_code != 422:
        return False
    body = response.json()
    if "errors" in body:  # the inference service: one "location: message" line per problem
        return all("more than two decimals" in line for line in body["errors"])
    problems = body["detail"]  # FastAPI's own form
    about_cents = [p for p in problems if "more than two decimals" in p["msg"]]
    # the body is one event or a list of them: the form it is not is reported too
    other_form = {"list_type", "model_attributes_type"}
    return bool(about_cents) and all(p in about_cents or p["type"] in other_form for p in problems)


def answered_as_valid(response: schemathesis.Response) -> bool:
    """A valid request succeeds, or names a customer the store does not know (404, documented),
    or breaks the cents rule."""
    return (
        response.status_code < 400
        or response.status_code == 404
        or (refused_only_for_cents(response))
    )


def exercise(operation: APIOperation, mode: GenerationMode) -> None:
    """Up to :data:`EXAMPLES` requests of one kind to one operation, each checked."""

    @EXAMPLES
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
        if mode is GenerationMode.POSITIVE:
            assert answered_as_valid(response), (
                f"a valid request refused: {response.status_code} {response.text}"
            )

    check()


def fuzz(schema: BaseSchema) -> list[str]:
    """Valid and invalid requests for every operation; what went against the schema."""
    problems = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                exercise(operation, mode)
            except Unsatisfiable:  # no parameter and no body: no invalid request to make
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:  # a failing check, with the request that made it fail
                problems.append(f"{operation.label} ({mode.value}): {exc}")
    return problems


def test_the_ingestion_api_answers_every_request_as_documented(ingest_schema: BaseSchema) -> None:
    problems = fuzz(ingest_schema)
    assert not problems, "\n\n".join(problems)


def test_the_inference_api_answers_every_request_as_documented(serve_schema: BaseSchema) -> None:
    problems = fuzz(serve_schema)
    assert not problems, "\n\n".join(problems)
