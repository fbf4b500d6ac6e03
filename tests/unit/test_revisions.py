"""The revision history: records, and which old ones are pruned."""

from __future__ import annotations

from operators.api.refs import RolloutRef
from operators.rollout.revisions import HISTORY_LIMIT, beyond_limit, recorded_template, revision_record

REF = RolloutRef(name="web", namespace="shop", uid="uid-1")
TEMPLATE = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "a:1"}]}}


def test_a_record_holds_the_template_and_belongs_to_the_rollout() -> None:
    record = revision_record(REF, "abc", TEMPLATE, 7)
    assert record["metadata"]["name"] == "web-abc"
    assert record["metadata"]["labels"]["sluice.dev/revision"] == "abc"
    assert record["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert record["revision"] == 7
    assert recorded_template(record) == TEMPLATE
    assert recorded_template(None) is None
    assert recorded_template({"data": {}}) is None


def test_the_oldest_beyond_the_limit_are_pruned_but_never_stable_or_canary() -> None:
    records = [revision_record(REF, f"r{n}", TEMPLATE, n) for n in range(HISTORY_LIMIT + 3)]
    pruned = {r["metadata"]["name"] for r in beyond_limit(records, keep=["r0", "r12"])}
    # 13 records, 10 kept: the two in use plus the 8 newest others; r1..r3 go.
    assert pruned == {"web-r1", "web-r2", "web-r3"}
    assert beyond_limit(records[:HISTORY_LIMIT], keep=[]) == []
