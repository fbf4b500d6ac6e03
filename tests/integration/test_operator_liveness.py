"""The operator's liveness probe, as a Deployment's livenessProbe would hit it."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from operators.operator import OperatorOptions
from sluice_sandbox.apiserver import SandboxThread
from sluice_sandbox.prometheus import free_port
from tests.harness import POLL_SECONDS, running_operator, sluice_crds

TIMEOUT = 30.0


def probe(url: str) -> tuple[int, bytes] | OSError:
    """One GET of the probe: (status, body), or the connection error."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError as error:
        return error


def wait_probe(url: str, ok: bool, timeout: float = TIMEOUT) -> tuple[int, bytes] | OSError:
    """Probe until it answers 200 (ok) or stops answering at all (not ok), within `timeout`."""
    deadline = time.monotonic() + timeout
    last: tuple[int, bytes] | OSError | None = None
    while time.monotonic() < deadline:
        last = probe(url)
        if ok and isinstance(last, tuple) and last[0] == 200:
            return last
        if not ok and isinstance(last, OSError):
            return last
        time.sleep(POLL_SECONDS)  # between probes, bounded by the deadline
    raise AssertionError(f"timed out after {timeout}s waiting for {url} (ok={ok}); last: {last!r}")


@pytest.mark.integration
def test_liveness_endpoint_answers_once_ready_and_goes_away_on_stop(sandbox_api: SandboxThread) -> None:
    for crd in sluice_crds():
        sandbox_api.run(sandbox_api.server.install_crd(crd))
    url = f"http://127.0.0.1:{free_port()}/healthz"
    assert isinstance(probe(url), OSError), "nothing listens there before the operator starts"
    options = OperatorOptions(
        all_namespaces=True, kubeconfig=str(sandbox_api.kubeconfig), liveness_endpoint=url
    )
    with running_operator(options):
        answer = wait_probe(url, ok=True)
        assert isinstance(answer, tuple)
        status, body = answer
        assert status == 200
        assert isinstance(json.loads(body), dict), "kopf answers with its probes' results as JSON"
        wrong_path = probe(url.replace("/healthz", "/nope"))
        assert isinstance(wrong_path, tuple) and wrong_path[0] == 404
    # The probe dies with the operator: a hung or stopped operator must fail its liveness check.
    wait_probe(url, ok=False)
