"""The FraudModel CRD: the API server itself accepts a good spec, fills the defaults, and
refuses nonsense before any operator sees it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client

from support.kube import ROOT, api_error_message, as_dict

GROUP, VERSION, PLURAL = "fraudstack.io", "v1alpha1", "fraudmodels"
EXAMPLE = yaml.safe_load((ROOT / "examples" / "fraudmodel.yaml").read_text())


@pytest.fixture(scope="module")
def namespace(crds: list[str], create_namespace: Callable[[str], str]) -> str:
    return create_namespace("fraudmodels")


def fraud_model(name: str, **spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(EXAMPLE)
    body["metadata"] = {"name": name}
    body["spec"] = {"stableVersion": "2026-01-01", **spec}
    return body


def create(
    objects: client.CustomObjectsApi, namespace: str, body: dict[str, Any]
) -> dict[str, Any]:
    return as_dict(
        objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
        )
    )


def refusal(objects: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> str:
    with pytest.raises(client.ApiException) as caught:
        create(objects, namespace, body)
    # 422 for a schema violation; 400 for a strict-decoding one (an unknown field).
    assert caught.value.status in (400, 422), caught.value.body
    return api_error_message(caught.value)


def test_crd_shape(api: client.ApiClient, crds: list[str]) -> None:
    crd = api.sanitize_for_serialization(
        client.ApiextensionsV1Api(api).read_custom_resource_definition("fraudmodels.fraudstack.io")
    )
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["shortNames"] == ["fm"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == VERSION and version["subresources"]["status"] == {}
    columns = {column["name"]: column["jsonPath"] for column in version["additionalPrinterColumns"]}
    assert columns == {
        "Stable": ".spec.stableVersion",
        "Candidate": ".spec.candidateVersion",
        "Share": ".status.candidateShare",
        "Phase": ".status.phase",
        "Age": ".metadata.creationTimestamp",
    }


def test_example_is_accepted(objects: client.CustomObjectsApi, namespace: str) -> None:
    created = create(objects, namespace, copy.deepcopy(EXAMPLE))
    assert created["spec"]["rollout"]["steps"][0] == {"share": 5, "durationSeconds": 600}
    assert created["spec"]["candidateShare"] == 0  # defaulted by the API server


def test_defaults_are_filled_in(objects: client.CustomObjectsApi, namespace: str) -> None:
    created = create(objects, namespace, fraud_model("defaults"))
    assert created["spec"] == {
        "stableVersion": "2026-01-01",
        "candidateShare": 0,
        "mode": "canary",
        "onGateFailure": "rollback",
        "gates": {
            "maxLatencyP99Ratio": 1.5,
            "maxErrorRateDelta": 0.01,
            "maxScoreDrift": 0.2,
            "minRequests": 100,
        },
    }


def test_status_is_a_subresource(objects: client.CustomObjectsApi, namespace: str) -> None:
    create(objects, namespace, fraud_model("with-status"))
    status = {
        "phase": "Progressing",
        "observedGeneration": 1,
        "candidateShare": 5,
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "RollingOut",
                "message": "step 1 of 3",
                "lastTransitionTime": "2026-01-15T10:00:00Z",
            }
        ],
    }
    patched = as_dict(
        objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "with-status", {"status": status}
        )
    )
    assert patched["status"]["phase"] == "Progressing"
    # A status sent through the main resource is ignored, as the subresource demands.
    objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "with-status", {"status": {"phase": "Hacked"}}
    )
    stored = as_dict(
        objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "with-status")
    )
    assert stored["status"]["phase"] == "Progressing"


def test_share_of_101_is_refused(objects: client.CustomObjectsApi, namespace: str) -> None:
    message = refusal(objects, namespace, fraud_model("share-101", candidateShare=101))
    assert "spec.candidateShare" in message
    assert "should be less than or equal to 100" in message


def test_negative_share_is_refused(objects: client.CustomObjectsApi, namespace: str) -> None:
    message = refusal(objects, namespace, fraud_model("share-minus", candidateShare=-1))
    assert "spec.candidateShare" in message


def test_step_share_of_101_is_refused(objects: client.CustomObjectsApi, namespace: str) -> None:
    steps = [{"share": 101, "durationSeconds": 60}]
    message = refusal(objects, namespace, fraud_model("step-101", rollout={"steps": steps}))
    assert "spec.rollout.steps[0].share" in message


def test_missing_stable_version_is_refused(
    objects: client.CustomObjectsApi, namespace: str
) -> None:
    body = fraud_model("no-stable", candidateVersion="2026-01-15")
    del body["spec"]["stableVersion"]
    message = refusal(objects, namespace, body)
    assert "spec.stableVersion: Required value" in message


def test_unknown_spec_field_is_refused(objects: client.CustomObjectsApi, namespace: str) -> None:
    message = refusal(objects, namespace, fraud_model("unknown", canaryPercent=10))
    assert 'unknown field "spec.canaryPercent"' in message


def test_unknown_nested_field_is_refused(objects: client.CustomObjectsApi, namespace: str) -> None:
    message = refusal(objects, namespace, fraud_model("unknown-gate", gates={"maxP99": 2}))
    assert 'unknown field "spec.gates.maxP99"' in message


def test_unknown_field_never_reaches_the_operator(
    objects: client.CustomObjectsApi, namespace: str
) -> None:
    """Without strict validation (old clients) the field is pruned, not stored."""
    created = as_dict(
        objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, fraud_model("pruned", canaryPercent=10)
        )
    )
    assert "canaryPercent" not in created["spec"]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"stableVersion": "../etc"}, "spec.stableVersion"),
        ({"candidateVersion": "v 2"}, "spec.candidateVersion"),
        ({"mode": "blue-green"}, "spec.mode"),
        ({"onGateFailure": "ignore"}, "spec.onGateFailure"),
        ({"gates": {"maxLatencyP99Ratio": 0.5}}, "spec.gates.maxLatencyP99Ratio"),
        ({"gates": {"maxScoreDrift": 1.5}}, "spec.gates.maxScoreDrift"),
        ({"rollout": {"steps": [{"share": 5, "durationSeconds": 1}]}}, "durationSeconds"),
        ({"rollout": {"steps": [{"share": 5}]}}, "durationSeconds: Required value"),
        (
            {"rollout": {"steps": [{"share": 5, "durationSeconds": 60}] * 11}},
            "spec.rollout.steps: Too many",
        ),
    ],
)
def test_other_nonsense_is_refused(
    objects: client.CustomObjectsApi, namespace: str, spec: dict[str, Any], field: str
) -> None:
    body = fraud_model("nonsense")
    body["spec"].update(spec)
    assert field in refusal(objects, namespace, body)
