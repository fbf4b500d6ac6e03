"""
Leases in the sandbox API server, as leader election uses them through the real ``kubernetes``
client: create, get, conditional PUTs (a stale resourceVersion is a 409 Conflict), MicroTimes,
and the 400s and 422s of a real API server for what it cannot decode or refuses.
"""

# The tests pass plain-dict manifests (as users write them) to the kubernetes client, which accepts
# them at runtime but types its parameters as models; and they read Optional model fields freely.
# mypy: disable-error-code="arg-type, union-attr"
import datetime
import json
import pathlib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiClient, ApiException, CoordinationV1Api, V1Lease

from sluice_sandbox.apiserver import SandboxThread

pytestmark = pytest.mark.integration

NS = "kube-system"
ACQUIRED = datetime.datetime(2026, 11, 30, 17, 0, 0, 123456, tzinfo=datetime.UTC)


@pytest.fixture
def leases(kubeconfig: pathlib.Path) -> Iterator[CoordinationV1Api]:
    client: ApiClient = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    yield CoordinationV1Api(client)
    client.close()


def lease(name: str = "sluice-leader", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": spec}


def raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The JSON as served, not the client's model (which parses the times)."""
    result: dict[str, Any] = call(*args, _preload_content=False, **kwargs).json()
    return result


def api_error(call: Callable[[], Any]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as excinfo:
        call()
    return excinfo.value.status, json.loads(excinfo.value.body)


def test_a_lease_round_trips_with_micro_times(leases: CoordinationV1Api) -> None:
    body = lease(
        holderIdentity="pod-a",
        leaseDurationSeconds=15,
        acquireTime=ACQUIRED,
        renewTime=ACQUIRED + datetime.timedelta(seconds=5),
        leaseTransitions=0,
    )
    created = leases.create_namespaced_lease(NS, body)
    assert (created.spec.holder_identity, created.spec.lease_duration_seconds) == ("pod-a", 15)
    assert (created.spec.acquire_time, created.spec.lease_transitions) == (ACQUIRED, 0)

    served = raw(leases.read_namespaced_lease, "sluice-leader", NS)
    assert served["kind"] == "Lease" and served["apiVersion"] == "coordination.k8s.io/v1"
    assert served["spec"]["acquireTime"] == "2026-11-30T17:00:00.123456Z"
    assert served["spec"]["renewTime"] == "2026-11-30T17:00:05.123456Z"
    assert [item.metadata.name for item in leases.list_namespaced_lease(NS).items] == ["sluice-leader"]


def test_micro_times_are_stored_in_utc_and_nulls_left_out(leases: CoordinationV1Api) -> None:
    body = lease(renewTime="2026-11-30T18:00:00.000001+01:00", holderIdentity=None, leaseTransitions=None)
    served = raw(leases.create_namespaced_lease, NS, body)
    assert served["spec"] == {"renewTime": "2026-11-30T17:00:00.000001Z"}
    empty = raw(leases.create_namespaced_lease, NS, {"metadata": {"name": "empty"}})
    assert empty["spec"] == {}  # a struct, never left out


def test_leader_election_takes_a_lease_at_most_once(leases: CoordinationV1Api) -> None:
    leases.create_namespaced_lease(
        NS, lease(holderIdentity="pod-a", leaseDurationSeconds=15, leaseTransitions=0)
    )
    # Two candidates read the expired lease at the same resourceVersion; both try to take it.
    first, second = (
        leases.read_namespaced_lease("sluice-leader", NS),
        leases.read_namespaced_lease("sluice-leader", NS),
    )
    for candidate, name in ((first, "pod-b"), (second, "pod-c")):
        candidate.spec.holder_identity = name
        candidate.spec.acquire_time = candidate.spec.renew_time = ACQUIRED
        candidate.spec.lease_transitions = (candidate.spec.lease_transitions or 0) + 1

    taken = leases.replace_namespaced_lease("sluice-leader", NS, first)
    assert taken.spec.holder_identity == "pod-b" and taken.spec.lease_transitions == 1
    assert int(taken.metadata.resource_version) > int(first.metadata.resource_version)

    code, status = api_error(lambda: leases.replace_namespaced_lease("sluice-leader", NS, second))
    assert code == 409
    assert (status["kind"], status["status"], status["reason"]) == ("Status", "Failure", "Conflict")
    assert status["details"] == {"name": "sluice-leader", "group": "coordination.k8s.io", "kind": "leases"}
    assert "the object has been modified" in status["message"]
    assert leases.read_namespaced_lease("sluice-leader", NS).spec.holder_identity == "pod-b"

    # The holder renews at the resourceVersion it holds.
    taken.spec.renew_time = ACQUIRED + datetime.timedelta(seconds=2)
    renewed = leases.replace_namespaced_lease("sluice-leader", NS, taken)
    assert renewed.spec.renew_time == ACQUIRED + datetime.timedelta(seconds=2)


def test_an_update_without_a_resource_version_is_refused(leases: CoordinationV1Api) -> None:
    leases.create_namespaced_lease(NS, lease(holderIdentity="pod-a"))
    code, status = api_error(
        lambda: leases.replace_namespaced_lease("sluice-leader", NS, lease(holderIdentity="pod-b"))
    )
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["message"] == (
        'Lease.coordination.k8s.io "sluice-leader" is invalid: '
        "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
    )
    # A patch applies to the stored object, at its resourceVersion: it needs none.
    patched = leases.patch_namespaced_lease("sluice-leader", NS, {"spec": {"holderIdentity": "pod-b"}})
    assert patched.spec.holder_identity == "pod-b"


@pytest.mark.parametrize(
    ("spec", "causes"),
    [
        pytest.param(
            {"leaseDurationSeconds": 0},
            [("spec.leaseDurationSeconds", "Invalid value: 0: must be greater than 0")],
            id="a duration of 0",
        ),
        pytest.param(
            {"leaseDurationSeconds": -5, "leaseTransitions": -1},
            [
                ("spec.leaseDurationSeconds", "Invalid value: -5: must be greater than 0"),
                ("spec.leaseTransitions", "Invalid value: -1: must be greater than or equal to 0"),
            ],
            id="both negative",
        ),
    ],
)
def test_invalid_values_are_422(
    leases: CoordinationV1Api, spec: dict[str, Any], causes: list[tuple[str, str]]
) -> None:
    code, status = api_error(lambda: leases.create_namespaced_lease(NS, lease(**spec)))
    assert (code, status["reason"], status["details"]["kind"]) == (422, "Invalid", "Lease")
    assert [(cause["field"], cause["message"]) for cause in status["details"]["causes"]] == causes
    assert [item.metadata.name for item in leases.list_namespaced_lease(NS).items] == []

    # The same on an update: the stored lease is left as it was.
    leases.create_namespaced_lease(NS, lease(leaseDurationSeconds=15))
    current = raw(leases.read_namespaced_lease, "sluice-leader", NS)
    current["spec"].update(spec)
    code, _ = api_error(lambda: leases.replace_namespaced_lease("sluice-leader", NS, current))
    assert code == 422
    assert leases.read_namespaced_lease("sluice-leader", NS).spec.lease_duration_seconds == 15


GO_TIME = '"2006-01-02T15:04:05.000000Z07:00"'
NOT_INT32 = "into Go struct field LeaseSpec.spec.{} of type int32"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        pytest.param(
            {"leaseDurationSeconds": "15"},
            "json: cannot unmarshal string " + NOT_INT32.format("leaseDurationSeconds"),
            id="a number as a string",
        ),
        pytest.param(
            {"leaseTransitions": 1.5},
            "json: cannot unmarshal number 1.5 " + NOT_INT32.format("leaseTransitions"),
            id="not an integer",
        ),
        pytest.param(
            {"leaseDurationSeconds": 2**31},
            "json: cannot unmarshal number 2147483648 " + NOT_INT32.format("leaseDurationSeconds"),
            id="beyond int32",
        ),
        pytest.param(
            {"holderIdentity": 7},
            "json: cannot unmarshal number 7 into Go struct field LeaseSpec.spec.holderIdentity "
            "of type string",
            id="not a string",
        ),
        pytest.param(
            {"renewTime": "2026-11-30T17:00:00Z"},
            f'parsing time "2026-11-30T17:00:00Z" as {GO_TIME}: cannot parse',
            id="a time without microseconds",
        ),
        pytest.param(
            {"renewTime": "2026-11-31T17:00:00.000000Z"},
            f'parsing time "2026-11-31T17:00:00.000000Z" as {GO_TIME}: cannot parse',
            id="no such day",
        ),
    ],
)
def test_undecodable_values_are_400(sandbox_api: SandboxThread, spec: dict[str, Any], reason: str) -> None:
    # Sent as raw JSON: the kubernetes client checks its models' types before sending.
    code, status, _ = post(sandbox_api.url, lease(**spec))
    assert (code, status["reason"]) == (400, "BadRequest")
    assert status["message"] == f'Lease in version "v1" cannot be handled as a Lease: {reason}'


def test_a_client_datetime_on_the_second_is_400_as_in_a_real_cluster(leases: CoordinationV1Api) -> None:
    # The kubernetes client sends datetimes with isoformat(), which leaves out a microsecond of 0:
    # a real API server cannot parse that as a MicroTime, one time in a million; nor can the sandbox.
    on_the_second = datetime.datetime(2026, 11, 30, 17, tzinfo=datetime.UTC)
    code, status = api_error(lambda: leases.create_namespaced_lease(NS, lease(acquireTime=on_the_second)))
    assert (code, status["reason"]) == (400, "BadRequest")
    assert f'parsing time "2026-11-30T17:00:00+00:00" as {GO_TIME}' in status["message"]


def post(url: str, body: dict[str, Any], query: str = "") -> tuple[int, dict[str, Any], list[str]]:
    """POST raw JSON: the status, the body, and the Warning headers."""
    request = urllib.request.Request(
        f"{url}/apis/coordination.k8s.io/v1/namespaces/{NS}/leases{query}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers.get_all("Warning") or []
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), []


def test_unknown_fields_are_dropped_or_refused(sandbox_api: SandboxThread) -> None:
    body = {**lease(holderIdentity="pod-a", color="red"), "status": {"x": 1}}
    code, status, _ = post(sandbox_api.url, body, "?fieldValidation=Strict")
    assert (code, status["reason"]) == (400, "BadRequest")
    assert status["message"].endswith(
        'strict decoding error: unknown field "status", unknown field "spec.color"'
    )

    code, created, headers = post(sandbox_api.url, body)  # Warn: the API server's default
    assert code == 201 and created["spec"] == {"holderIdentity": "pod-a"} and "status" not in created
    assert headers == ['299 - "unknown field \\"status\\""', '299 - "unknown field \\"spec.color\\""']


def test_a_lease_model_from_the_client_round_trips(leases: CoordinationV1Api) -> None:
    """What leader election code builds: the client's own models, not dicts."""
    model = V1Lease(
        metadata=kubernetes.client.V1ObjectMeta(name="sluice-leader"),
        spec=kubernetes.client.V1LeaseSpec(
            holder_identity="pod-a", lease_duration_seconds=15, renew_time=ACQUIRED, lease_transitions=3
        ),
    )
    leases.create_namespaced_lease(NS, model)
    read = leases.read_namespaced_lease("sluice-leader", NS)
    assert read.spec == model.spec
