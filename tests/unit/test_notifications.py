"""Notifications: the pure plan -> notifications mapping (on the real engine), the Secret's format,
each target's request, and delivery (retries, a dead receiver) to a real local HTTP receiver."""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from operators.api.notifications import NotificationKind
from operators.api.rollout import Outcome, Phase, RolloutSpec, RolloutStatus
from operators.metrics.credentials import CachedSecrets
from operators.metrics.hosts import AllowedHosts
from operators.notifications.config import ConfigError, Target, parse_config
from operators.notifications.message import FailedMetric, Notification
from operators.notifications.notifier import Notifier, parse_secret_name
from operators.notifications.sender import Sender
from operators.notifications.targets import request_for, slack_payload, teams_payload
from operators.rollout import engine
from operators.rollout.commands import Command
from operators.rollout.notify import notifications_of
from tests.notify_receiver import running_receiver, wait_until
from tests.unit.engine_world import METRIC, REF, T0, World, make_check, make_spec, template

K = NotificationKind


def told(world: World, since: int = 0) -> list[Notification]:
    """What the shell would send for each pass since `since`."""
    steps = len(world.spec.strategy.canary.effective_steps()) if world.spec.strategy.canary else None
    return [
        n
        for p in world.passes[since:]
        for n in notifications_of(REF.namespace, REF.name, p.before, p.plan.status, p.plan.events, T0, steps)
    ]


# ---- what a pass did, as notifications ------------------------------------------------------------


def test_a_release_is_told_once_per_transition_from_start_to_promotion() -> None:
    world = World(make_spec([{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}]))
    world.settle()
    assert world.status.phase == Phase.HEALTHY
    start = len(world.passes)
    world.set_image("ghcr.io/acme/web:2")
    world.settle()
    assert world.status.phase == Phase.PAUSED
    world.settle()  # quiet passes while paused tell nothing more
    world.annotate(Command.PROMOTE, "1")
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY)
    world.settle()
    kinds = [n.kind for n in told(world, start)]
    assert kinds == [
        K.RELEASE_STARTED,
        K.STEP_ADVANCED,
        K.PAUSED,
        K.STEP_ADVANCED,
        K.STEP_ADVANCED,
        K.PROMOTED,
    ]
    steps = [(n.step, n.steps, n.canary_weight) for n in told(world, start) if n.kind == K.STEP_ADVANCED]
    assert steps == [(1, 3, 10), (2, 3, 10), (3, 3, 50)]
    paused = next(n for n in told(world, start) if n.kind == K.PAUSED)
    assert "paused until promoted" in paused.message


def test_a_blue_green_release_tells_its_stages_the_pause_and_the_promotion() -> None:
    spec = RolloutSpec.model_validate(
        {
            "replicas": 3,
            "template": template(),
            "service": {"port": 80},
            "strategy": {"blueGreen": {"prePromotionAnalysis": {"interval": "30s", "metrics": [METRIC]}}},
        }
    )
    world = World(spec)
    world.settle()
    start = len(world.passes)
    world.set_image("ghcr.io/acme/web:2")
    world.run_until(lambda w: w.status.phase == Phase.PAUSED)
    world.annotate(Command.PROMOTE, "1")
    world.run_until(lambda w: w.status.phase == Phase.HEALTHY)
    kinds = [n.kind for n in told(world, start)]
    assert kinds[0] == K.RELEASE_STARTED and kinds[-1] == K.PROMOTED
    assert kinds.count(K.PAUSED) == 1 and K.STEP_ADVANCED in kinds


def test_a_rollback_names_the_failing_metric_and_its_value() -> None:
    spec = make_spec([{"setWeight": 10}, {"pause": {}}], analysis={"failureLimit": 0})
    world = World(spec)
    world.settle()
    world.set_image("ghcr.io/acme/web:2")
    world.run_until(lambda w: w.status.canary_weight == 10, follow_requeue=False)
    start = len(world.passes)
    world.advance(30)
    world.reconcile(outcome=Outcome.FAILED)
    world.settle()
    [rollback] = told(world, start)
    assert rollback.kind == K.ROLLED_BACK
    assert rollback.is_warning
    assert rollback.failed_metrics == (FailedMetric("error-rate", "Failed", 0.31, "0.31 > max 0.01"),)
    assert "error-rate=0.31 Failed" in rollback.message  # the engine's message, as in the Event


def test_a_dry_run_or_passing_metric_is_not_named_as_failing() -> None:
    check = make_check(Outcome.FAILED, T0)
    passing = make_check(Outcome.PASSED, T0, metric="latency").metrics[0]
    dry = make_check(Outcome.FAILED, T0, metric="score").metrics[0].model_copy(update={"dry_run": True})
    check.metrics += [passing, dry]
    before = RolloutStatus(phase=Phase.PROGRESSING)
    after = before.model_copy(update={"phase": Phase.DEGRADED})
    after.analysis.last_check = check
    [note] = notifications_of(
        "shop", "web", before, after, [engine.EventNote("Warning", "RolledBack", "x")], T0
    )
    assert [m.name for m in note.failed_metrics] == ["error-rate"]


def test_a_blocked_rollout_is_told_stalled_once() -> None:
    before = RolloutStatus(phase=Phase.HEALTHY)
    blocked = engine.blocked_status(before, 2, "InvalidSpec", "invalid Rollout: steps: bad", T0)
    [note] = notifications_of("shop", "web", before, blocked, [], T0)
    assert (note.kind, note.message) == (K.STALLED, "invalid Rollout: steps: bad")
    again = engine.blocked_status(blocked, 2, "InvalidSpec", "invalid Rollout: steps: bad", T0)
    assert notifications_of("shop", "web", blocked, again, [], T0) == []


# ---- the Secret's format --------------------------------------------------------------------------


def data(**values: str) -> dict[str, bytes]:
    return {key: value.encode() for key, value in values.items()}


def test_a_secret_names_targets_events_and_the_cloudevents_mode() -> None:
    config = parse_config(
        data(
            slack="https://hooks.slack.com/services/T/B/X",
            cloudevents="http://broker.knative/default",
            events="RolledBack, Stalled",
            cloudeventsMode="binary",
        ),
        "Secret x",
    )
    assert [(t.kind, t.cloudevents_mode) for t in config.targets] == [
        ("slack", "binary"),
        ("cloudevents", "binary"),
    ]
    assert config.wants(K.ROLLED_BACK) and not config.wants(K.STEP_ADVANCED)
    assert "hooks.slack.com" not in repr(config)  # a URL is a credential: not in logs


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "names no target"),
        ({"slack": "hooks.slack.com/x"}, 'key "slack" of Secret x is not an http:// or https:// URL'),
        ({"webhook": "http://x", "events": "RolledBack,Exploded"}, "unknown kind(s) Exploded"),
        ({"webhook": "http://x", "cloudeventsMode": "batch"}, "must be structured or binary"),
        ({"webhook": "http://x", "discord": "http://y"}, "unknown key(s) discord"),
    ],
)
def test_a_bad_secret_says_which_key_is_wrong(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(data(**values), "Secret x")


def test_the_operator_wide_secret_is_named_namespace_slash_name() -> None:
    assert parse_secret_name("sluice-system/alerts") == ("sluice-system", "alerts")
    for wrong in ("alerts", "/alerts", "a/b/c"):
        with pytest.raises(ValueError, match="NAMESPACE/NAME"):
            parse_secret_name(wrong)


# ---- each target's request ------------------------------------------------------------------------

ROLLED_BACK = Notification(
    kind=K.ROLLED_BACK,
    namespace="shop",
    rollout="web",
    message="rolled back revision abc: error-rate=0.31 Failed (0.31 > max 0.01)",
    time="2026-01-01T12:00:00Z",
    revision="abc",
    stable_revision="def",
    phase="Degraded",
    step=1,
    steps=3,
    canary_weight=0,
    failed_metrics=(FailedMetric("error-rate", "Failed", 0.31, "0.31 > max 0.01"),),
)


def test_slack_gets_a_text_and_block_kit_fields() -> None:
    payload = slack_payload(ROLLED_BACK)
    assert payload["text"].startswith("Rollout shop/web: RolledBack: rolled back revision abc")
    header, section, facts = payload["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Rollout shop/web: RolledBack"},
    }
    assert section["text"]["type"] == "mrkdwn" and ":warning:" in section["text"]["text"]
    assert {"type": "mrkdwn", "text": "*Metric error-rate*\n0.31 Failed (0.31 > max 0.01)"} in facts["fields"]
    assert {"type": "mrkdwn", "text": "*Step*\n1/3"} in facts["fields"]
    assert len(facts["fields"]) <= 10


def test_teams_gets_an_adaptive_card_message() -> None:
    payload = teams_payload(ROLLED_BACK)
    assert payload["type"] == "message"
    [attachment] = payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    title, text, facts = card["body"]
    assert (title["text"], title["color"]) == ("Rollout shop/web: RolledBack", "Attention")
    assert text["text"] == ROLLED_BACK.message
    assert {"title": "Metric error-rate", "value": "0.31 Failed (0.31 > max 0.01)"} in facts["facts"]


def test_the_webhook_gets_the_notification_as_json() -> None:
    request = request_for(Target("webhook", "http://receiver/hook"), ROLLED_BACK)
    assert request.headers == {"Content-Type": "application/json"}
    body = json.loads(request.body)
    assert body["kind"] == "RolledBack"
    assert body["failedMetrics"] == [
        {"name": "error-rate", "outcome": "Failed", "value": 0.31, "message": "0.31 > max 0.01"}
    ]


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_cloudevents_follow_the_http_binding(mode: Any) -> None:
    request = request_for(Target("cloudevents", "http://broker/", mode), ROLLED_BACK)
    if mode == "structured":
        assert request.headers["content-type"] == "application/cloudevents+json"
        assert json.loads(request.body)["specversion"] == "1.0"
    else:
        assert request.headers["ce-type"] == "dev.sluice.rollout.rolledback"
        assert request.headers["content-type"] == "application/json"
    event = from_http_event(HTTPMessage(request.headers, request.body))  # read back as a receiver would
    attributes = event.get_attributes()
    assert attributes["type"] == "dev.sluice.rollout.rolledback"
    assert attributes["source"] == "/apis/sluice.dev/v1alpha1/namespaces/shop/rollouts/web"
    assert attributes["subject"] == "web"
    assert event.get_data()["failedMetrics"][0]["value"] == 0.31


# ---- delivery -------------------------------------------------------------------------------------


def test_a_failed_delivery_is_retried_with_the_same_request_until_it_is_taken() -> None:
    with running_receiver(answers=[500, 503]) as receiver:
        sender = Sender(backoff=0.05)
        request = request_for(Target("cloudevents", f"{receiver.url}/events", "binary"), ROLLED_BACK)
        assert sender.send(request)
        wait_until(lambda: sender.delivered == 1, 10, "the third attempt to be taken")
        got = receiver.on("/events")
        assert len(got) == 3
        assert len({r.headers["ce-id"] for r in got}) == 1, (
            "a retry is the same event (receivers dedupe by id)"
        )
        assert sender.failed == 0


def test_a_refusal_that_will_not_change_is_not_retried() -> None:
    with running_receiver(answers=[404]) as receiver:
        sender = Sender(backoff=0.05)
        sender.send(request_for(Target("webhook", f"{receiver.url}/gone"), ROLLED_BACK))
        wait_until(lambda: sender.failed == 1, 10, "the delivery to be given up")
        assert len(receiver.on("/gone")) == 1


def test_retries_stop_after_the_last_attempt() -> None:
    with running_receiver(answers=[500] * 10) as receiver:
        sender = Sender(backoff=0.02, attempts=3)
        sender.send(request_for(Target("webhook", f"{receiver.url}/down"), ROLLED_BACK))
        wait_until(lambda: sender.failed == 1, 10, "the delivery to be given up")
        assert len(receiver.on("/down")) == 3


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: a hung receiver."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def secret(**values: str) -> dict[str, Any]:
    return {"data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}}


def test_a_dead_receiver_never_delays_the_pass_that_tells_it(silent_port: int) -> None:
    secrets = CachedSecrets(lambda namespace, name: secret(webhook=f"http://127.0.0.1:{silent_port}/hook"))
    sender = Sender(timeout=2.0)
    notifier = Notifier(secrets=secrets, allowed=AllowedHosts.of([], ["127.0.0.1"]), sender=sender)
    started = time.monotonic()
    for _ in range(20):  # twenty passes, each with something to tell
        notifier.notify("shop", "alerts", [ROLLED_BACK], lambda message: None)
    assert time.monotonic() - started < 0.2
    wait_until(lambda: secrets.fetches == 1, 5, "the sender to read the Secret")
    assert sender.delivered == 0 and not sender.idle(), "the sender is still waiting on the receiver"


def test_a_rollouts_targets_must_be_on_the_notification_hosts_and_problems_are_reported() -> None:
    problems: list[str] = []
    with running_receiver() as receiver:
        bodies = {
            "alerts": secret(
                webhook=f"{receiver.url}/rollout", slack="https://hooks.slack.com/services/T/B/X"
            ),
            "wide": secret(webhook=f"{receiver.url}/operator"),
        }
        secrets = CachedSecrets(lambda namespace, name: bodies.get(name))
        sender = Sender(backoff=0.05)
        notifier = Notifier(
            secrets=secrets,
            allowed=AllowedHosts.of([], ["127.0.0.1"]),
            operator_secret=("sluice-system", "wide"),
            sender=sender,
        )
        notifier.notify("shop", "alerts", [ROLLED_BACK], problems.append)
        notifier.notify("shop", "missing", [ROLLED_BACK], problems.append)
        wait_until(lambda: sender.delivered == 3 and sender.idle(), 10, "the deliveries")
        assert len(receiver.on("/rollout")) == 1
        assert len(receiver.on("/operator")) == 2  # the operator-wide target hears of every Rollout
    assert problems == [
        "notification target slack at host hooks.slack.com:443 is not an allowed notification host "
        "(allowed: 127.0.0.1); run the operator with --notification-hosts hooks.slack.com:443 to allow it",
        'notification Secret "missing" (namespace shop) does not exist',
    ]
    assert not any("services/T/B/X" in problem for problem in problems)
