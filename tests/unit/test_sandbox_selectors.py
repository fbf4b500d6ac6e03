import pytest

from sluice_sandbox.selectors import (
    FieldSelector,
    LabelSelector,
    Operator,
    Requirement,
    SelectorError,
    format_label_selector,
    label_selector_from_dict,
    parse_field_selector,
    parse_label_selector,
)

LABELS = {"app": "web", "tier": "front", "example.com/version": "v2", "replicas": "3", "empty": ""}


@pytest.mark.parametrize(
    "selector, expected",
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("app!=web", False),
        ("missing!=x", True),  # an absent label is "not equal" to anything
        ("app in (web, db)", True),
        ("app in (db)", False),
        ("missing in (x)", False),
        ("app notin (db)", True),
        ("app notin (web,db)", False),
        ("missing notin (x)", True),
        ("tier", True),
        ("missing", False),
        ("!missing", True),
        ("!tier", False),
        ("example.com/version=v2", True),
        ("empty=", True),
        ("replicas>2", True),
        ("replicas<3", False),
        ("app>2", False),  # non-numeric labels never match numeric comparisons
        ("app=web,tier=front", True),
        ("app=web,tier=back", False),
        ("app in (web,db),!missing, tier notin (back)", True),
        ("  app = web  ", True),
    ],
)
def test_label_selector_matching(selector: str, expected: bool) -> None:
    assert parse_label_selector(selector).matches(LABELS) is expected


@pytest.mark.parametrize(
    "selector, requirements",
    [
        ("a=b", (Requirement("a", Operator.EQUALS, frozenset({"b"})),)),
        ("a!=b", (Requirement("a", Operator.NOT_EQUALS, frozenset({"b"})),)),
        ("a in (x,y)", (Requirement("a", Operator.IN, frozenset({"x", "y"})),)),
        ("a notin (x)", (Requirement("a", Operator.NOT_IN, frozenset({"x"})),)),
        ("a,!b", (Requirement("a", Operator.EXISTS), Requirement("b", Operator.DOES_NOT_EXIST))),
        ("n>1", (Requirement("n", Operator.GREATER_THAN, frozenset({"1"})),)),
    ],
)
def test_label_selector_parsing(selector: str, requirements: tuple[Requirement, ...]) -> None:
    assert parse_label_selector(selector) == LabelSelector(requirements)


@pytest.mark.parametrize(
    "selector",
    [
        "app in (web",
        "app in web)",
        "app=web,",
        ",app",
        "app=we b",
        "app in (a b)",
        "=web",
        "a>b",
        "a b",
    ],
)
def test_label_selector_errors(selector: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


def test_label_selectors_without_labels() -> None:
    assert parse_label_selector("!app").matches(None)
    assert not parse_label_selector("app").matches(None)
    assert parse_label_selector(None).matches(None)


@pytest.mark.parametrize(
    "structured, text",
    [
        ({"matchLabels": {"app": "web"}}, "app=web"),
        ({"matchLabels": {"app": "web", "tier": "front"}}, "app=web,tier=front"),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]}, "tier in (a,b)"),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, "tier notin (a)"),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, "tier"),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, "!tier"),
        (None, ""),
    ],
)
def test_structured_label_selectors(structured: dict[str, object] | None, text: str) -> None:
    selector = label_selector_from_dict(structured)
    assert format_label_selector(selector) == text
    assert parse_label_selector(text) == selector


def test_structured_label_selector_with_an_unknown_operator() -> None:
    with pytest.raises(SelectorError):
        label_selector_from_dict({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})


OBJ = {
    "metadata": {"name": "web", "namespace": "prod"},
    "spec": {"nodeName": "", "paused": True},
    "involvedObject": {"name": "a,b"},
}


@pytest.mark.parametrize(
    "selector, expected",
    [
        ("", True),
        ("metadata.name=web", True),
        ("metadata.name==web", True),
        ("metadata.name!=web", False),
        ("metadata.namespace=prod", True),
        ("metadata.namespace=prod,metadata.name=db", False),
        ("metadata.namespace!=dev,metadata.name=web", True),
        ("spec.nodeName=", True),  # absent or empty fields compare as empty strings
        ("spec.missing=", True),
        ("spec.paused=true", True),
        (r"involvedObject.name=a\,b", True),
    ],
)
def test_field_selector_matching(selector: str, expected: bool) -> None:
    assert parse_field_selector(selector).matches(OBJ) is expected


@pytest.mark.parametrize("selector", ["metadata.name", "metadata.name~web", "=web"])
def test_field_selector_errors(selector: str) -> None:
    with pytest.raises(SelectorError):
        parse_field_selector(selector)


def test_empty_selectors_are_falsy() -> None:
    assert not parse_label_selector("") and not LabelSelector()
    assert not parse_field_selector(None) and not FieldSelector()
    assert parse_label_selector("a") and parse_field_selector("a=b")
