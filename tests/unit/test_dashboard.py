"""`sluice dashboard`'s pure parts (what a page shows of an object, the buttons' patches) and its
server's guard against other sites, over real HTTP (aiohttp's test server on loopback)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes import client as k8s

from operators.cli.dashboard.actions import UnknownAction, action_patch
from operators.cli.dashboard.hub import Hub
from operators.cli.dashboard.model import Seen, rollout_detail, summary, weights_from_history
from operators.cli.dashboard.server import TOKEN_HEADER, allowed_hosts, make_app
from operators.foundation.cluster import Cluster


def rollout(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    analysis = {"metrics": [{"name": "error-rate", "thresholdRange": {"max": 0.1}}]}
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]
    return {
        "kind": "Rollout",
        "metadata": {"namespace": "shop", "name": "web"},
        "spec": {"strategy": {"canary": {"steps": steps, "analysis": analysis}}, **spec},
        "status": status,
    }


def check(time: str, value: float, outcome: str) -> dict[str, Any]:
    return {
        "time": time,
        "outcome": outcome,
        "metrics": [{"name": "error-rate", "value": value, "outcome": outcome}],
    }


def test_a_rollout_row_has_phase_step_weight_and_stalled() -> None:
    body = rollout(
        {
            "phase": "Degraded",
            "currentStepIndex": 0,
            "canaryWeight": 0,
            "message": "rolled back",
            "conditions": [{"type": "Stalled", "status": "True"}],
        },
        paused=True,
    )
    row = summary(body)
    assert row["id"] == "Rollout/shop/web"
    assert (row["phase"], row["progress"], row["weight"], row["stalled"], row["paused"]) == (
        "Degraded",
        "step 1/3",
        0,
        True,
        True,
    )


def test_applications_and_sidecarsets_say_how_far_along_they_are() -> None:
    app = {
        "kind": "Application",
        "metadata": {"namespace": "shop", "name": "shop"},
        "status": {"phase": "Running", "readyComponents": "2/2"},
    }
    sidecars = {"kind": "SidecarSet", "metadata": {"name": "log"}, "status": {"matched": 3, "updated": 1}}
    assert summary(app)["progress"] == "2/2 components ready"
    row = summary(sidecars)
    assert (row["id"], row["phase"], row["progress"]) == ("SidecarSet//log", "Pending", "1/3 updated")


def test_weights_from_history_oldest_first_with_zero_after_a_rollback() -> None:
    history = [  # newest first, as the operator writes it
        {"time": "2026-01-01T00:00:30Z", "action": "rolled-back", "message": "rolled back revision x"},
        {"time": "2026-01-01T00:00:20Z", "action": "set-weight", "message": "canary weight 20% -> 50%"},
        {"time": "2026-01-01T00:00:15Z", "action": "step", "message": "step 1/3 done"},
        {"time": "2026-01-01T00:00:10Z", "action": "set-weight", "message": "canary weight 0% -> 20%"},
    ]
    assert [(p["time"][-3:], p["weight"]) for p in weights_from_history(history)] == [
        ("10Z", 20),
        ("20Z", 50),
        ("30Z", 0),
    ]


def test_seen_records_changes_only_and_each_check_once() -> None:
    seen = Seen()
    first = rollout({"canaryWeight": 20, "weightChangedAt": "2026-01-01T00:00:10Z"})
    seen.observe(first, "2026-01-01T00:00:12Z")
    seen.observe(first, "2026-01-01T00:00:13Z")
    checked = rollout(
        {"canaryWeight": 20, "analysis": {"lastCheck": check("2026-01-01T00:00:14Z", 0.0, "Passed")}}
    )
    seen.observe(checked, "2026-01-01T00:00:14.5Z")
    seen.observe(checked, "2026-01-01T00:00:15Z")
    seen.observe(rollout({"canaryWeight": 0}), "2026-01-01T00:00:16Z")
    assert seen.weights == [
        {"time": "2026-01-01T00:00:10Z", "weight": 20},  # the first: when the status says it changed
        {"time": "2026-01-01T00:00:16Z", "weight": 0},  # later ones: when seen
    ]
    assert [c["time"] for c in seen.checks] == ["2026-01-01T00:00:14Z"]


def test_the_detail_has_each_metric_against_its_threshold_and_a_time_ordered_weight_line() -> None:
    seen = Seen(
        weights=[{"time": "2026-01-01T00:00:25.5Z", "weight": 0}],
        checks=[check("2026-01-01T00:00:12Z", 0.0, "Passed"), check("2026-01-01T00:00:24Z", 0.3, "Failed")],
    )
    history = [
        {"time": "2026-01-01T00:00:25Z", "action": "rolled-back", "message": "error-rate=0.3"},
        {"time": "2026-01-01T00:00:10Z", "action": "set-weight", "message": "canary weight 0% -> 20%"},
    ]
    detail = rollout_detail(rollout({"phase": "Degraded", "history": history}), seen, "2026-01-01T00:00:05Z")
    assert [p["weight"] for p in detail["weights"]] == [20, 0, 0]
    (metric,) = detail["metrics"]
    assert metric["threshold"] == {"max": 0.1}
    assert [(v["value"], v["outcome"]) for v in metric["values"]] == [(0.0, "Passed"), (0.3, "Failed")]
    assert detail["watchingSince"] == "2026-01-01T00:00:05Z" and detail["history"] == history


def test_the_buttons_patch_what_the_cli_verbs_do() -> None:
    assert action_patch("promote", "1") == {"metadata": {"annotations": {"sluice.dev/promote": "1"}}}
    assert action_patch("abort", "2") == {"metadata": {"annotations": {"sluice.dev/abort": "2"}}}
    assert action_patch("retry", "3") == {"metadata": {"annotations": {"sluice.dev/retry": "3"}}}
    assert action_patch("pause") == {"spec": {"paused": True}}
    assert action_patch("resume") == {"spec": {"paused": False}}
    fresh = action_patch("promote")["metadata"]["annotations"]["sluice.dev/promote"]
    assert fresh.isdigit(), "a new value each time: the operator acts once per distinct value"
    with pytest.raises(UnknownAction, match="one of promote, abort, retry, pause, resume"):
        action_patch("delete")


def test_loopback_hosts_accept_the_loopback_names_only() -> None:
    assert allowed_hosts("127.0.0.1", 3100) == {"127.0.0.1:3100", "localhost:3100", "[::1]:3100"}
    assert allowed_hosts("10.0.0.5", 80) == {"10.0.0.5:80"}


# ---- the guard, over HTTP. The Cluster points nowhere: a refused request never reaches it. ------


def guarded(*requests: tuple[str, str, dict[str, str]]) -> list[tuple[int, str, dict[str, str]]]:
    """(status, body, headers) of each (method, path, headers) sent to a dashboard server on loopback."""

    async def run() -> list[tuple[int, str, dict[str, str]]]:
        box: list[int] = []
        app = make_app(Hub(), Cluster(k8s.ApiClient()), lambda: allowed_hosts("127.0.0.1", box[0]), "s3cret")
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            assert client.port is not None
            box.append(client.port)
            answers = []
            for method, path, headers in requests:
                async with client.request(method, path, headers=headers) as response:
                    answers.append((response.status, await response.text(), dict(response.headers)))
            return answers

    return asyncio.run(run())


def test_the_page_carries_its_token_and_no_site_may_frame_it() -> None:
    ((status, page, headers),) = guarded(("GET", "/", {}))
    assert status == 200 and 'content="s3cret"' in page
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"


def test_posts_without_the_token_from_another_origin_or_for_another_host_are_refused() -> None:
    promote = "/api/rollouts/shop/web/promote"
    answers = guarded(
        ("POST", promote, {}),
        ("POST", promote, {TOKEN_HEADER: "guess"}),
        ("POST", promote, {TOKEN_HEADER: "s3cret", "Origin": "https://evil.example"}),
        ("GET", "/api/snapshot", {"Host": "evil.example:3100"}),  # DNS rebinding
        ("POST", "/api/rollouts/shop/web/delete", {TOKEN_HEADER: "s3cret"}),
    )
    assert [status for status, _, _ in answers] == [403, 403, 403, 421, 404]
    assert "X-Sluice-Token" in answers[0][1] and "evil.example" in answers[2][1]


def test_the_hub_tells_listeners_of_changes_deletions_and_watch_errors() -> None:
    async def run() -> list[str]:
        hub = Hub()
        queue = hub.listen()
        hub.changed("Rollout", "SYNCED", [rollout({"phase": "Healthy"})])
        hub.changed("Rollout", "MODIFIED", rollout({"phase": "Progressing", "canaryWeight": 20}))
        hub.changed("SidecarSet", "ERROR", {"message": "cannot watch sidecarsets: 403 Forbidden"})
        hub.changed("Rollout", "DELETED", rollout({}))
        assert hub.objects == {} and hub.errors == {"SidecarSet": "cannot watch sidecarsets: 403 Forbidden"}
        return [queue.get_nowait() for _ in range(queue.qsize())]

    events = asyncio.run(run())
    assert [e.split("\n")[0] for e in events] == [
        "event: snapshot",  # on connecting: empty
        "event: snapshot",  # the list
        "event: object",
        "event: snapshot",  # with the error, which the page shows
        "event: deleted",
    ]
    assert '"phase":"Progressing"' in events[2] and '"weights":[{' in events[2]
    assert "403 Forbidden" in events[3] and '"id":"Rollout/shop/web"' in events[4]
