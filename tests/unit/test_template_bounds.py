"""Templates render in worker processes, bounded in time and memory: real renderer, real workers.

Hostile templates come back as one-line problems within seconds, the test
process itself never holds their memory, and a renderer keeps working (and
caches what it learnt) after a worker was killed.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from operators.analysis.templates import QueryContext, QueryTemplateError, render_query
from operators.api.rollout import Metric
from operators.application.types import ComponentType
from operators.templating import renderer as renderer_module
from operators.templating.renderer import MIB, Renderer, TemplateKind
from operators.templating.sandbox import TemplateProblem, Wording

QUERY = TemplateKind(Wording(subject="query", template="query template"), 64 * 1024)
CONTEXT = QueryContext("shop", "web", "web-canary", "web", "abc", "30s")
NESTED_LOOPS = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
CENTER = "{{ 'a'|center(300000000) }}"
# Loop variables do not leave a Jinja loop, so a runaway template keeps its state in a dict.
DOUBLING = (
    "{% set d = {'x': 'a'} %}{% for i in range(64) %}{% set _ = d.update({'x': d.x ~ d.x}) %}{% endfor %}"
    "{{ d.x|length }}"
)
# Generous bounds: they tell "bounded" from "ran for minutes", not fast from slow.
WITHIN = 15.0
IMMEDIATE = 1.0


@pytest.fixture(scope="module")
def renderer() -> Iterator[Renderer]:
    # A long timeout: memory bombs must come back as memory problems even on a slow machine.
    with Renderer(workers=2, timeout=10.0) as renderer:
        yield renderer


def metric(query: str, **args: str) -> Metric:
    return Metric(name="x", query=query, args=args, threshold_range={"max": 1})


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for its parent has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until_gone(pids: list[int], seconds: float = WITHIN) -> list[int]:
    """The pids still alive after waiting up to `seconds` for all of them to end."""
    deadline = time.monotonic() + seconds
    while True:
        left = [pid for pid in pids if alive(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def test_a_runaway_loop_is_stopped_once_and_the_renderer_goes_on() -> None:
    default = renderer_module.default_renderer()
    timeouts = default.timeouts
    started = time.monotonic()
    with pytest.raises(QueryTemplateError) as caught:
        render_query(metric(NESTED_LOOPS), CONTEXT)
    took = time.monotonic() - started
    assert str(caught.value).startswith('metric "x": query template took longer than 2s to render; ')
    assert "\n" not in str(caught.value)
    assert took < WITHIN
    assert default.timeouts == timeouts + 1

    # Seen again (the next reconcile pass): the problem is remembered, not rendered again.
    started = time.monotonic()
    with pytest.raises(QueryTemplateError) as again:
        render_query(metric(NESTED_LOOPS), CONTEXT)
    assert time.monotonic() - started < IMMEDIATE
    assert str(again.value) == str(caught.value)
    assert default.timeouts == timeouts + 1

    # The killed worker was replaced.
    assert render_query(metric("up{namespace='{{ namespace }}'}"), CONTEXT) == "up{namespace='shop'}"


def test_a_timed_out_template_is_tried_again_after_a_while() -> None:
    # An honest template on a CPU-starved operator may time out once: it is not refused for good.
    with Renderer(workers=1, timeout=0.5, retry_timeouts_after=0.0) as renderer:
        for attempt in (1, 2):
            with pytest.raises(TemplateProblem, match=r"took longer than 0\.5s"):
                renderer.render(QUERY, NESTED_LOOPS, (), {})
            assert renderer.timeouts == attempt, "rendered again, not answered from the cache"


@pytest.mark.parametrize("source", [CENTER, DOUBLING], ids=["center", "doubling"])
def test_a_memory_bomb_is_a_memory_problem(renderer: Renderer, source: str) -> None:
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.monotonic()
    with pytest.raises(TemplateProblem) as caught:
        renderer.render(QUERY, source, (), {})
    assert time.monotonic() - started < WITHIN
    assert str(caught.value) == f"query template needs more than {renderer.memory_limit // MIB} MiB to render"
    # The test process (the operator, in production) never held that memory.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 100 * 1024
    assert renderer.render(QUERY, "{{ n }} left", ("n",), {"n": 1}) == "1 left"


def test_honest_templates_fit_in_the_memory_bound(renderer: Renderer) -> None:
    # Honest templates fit: a few MiB of working data is nowhere near the bound.
    source = (
        "{% set d = {'x': 'a'} %}{% for i in range(22) %}{% set _ = d.update({'x': d.x ~ d.x}) %}{% endfor %}"
    )
    assert renderer.render(QUERY, source + "{{ d.x|length }}", (), {}) == str(2**22)


def test_concurrent_renders_from_many_threads_get_their_own_answers(renderer: Renderer) -> None:
    answers: dict[tuple[int, int], str] = {}
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for i in range(25):
                # Some sources shared by all threads, some values their own.
                source = "{{ thread }}/{{ i }}" if i % 2 else "{{ i }}:{{ thread }}"
                answers[thread, i] = renderer.render(
                    QUERY, source, ("thread", "i"), {"thread": thread, "i": i}
                )
        except BaseException as error:  # reported below, with the others
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert not any(thread.is_alive() for thread in threads)
    for (n, i), answer in answers.items():
        assert answer == (f"{n}/{i}" if i % 2 else f"{i}:{n}")
    assert len(answers) == 8 * 25
    assert len(renderer.worker_pids()) <= renderer.workers


def test_args_of_the_metric_reach_its_query() -> None:
    query = render_query(metric("histogram_quantile({{ args.quantile }}, x)", quantile="0.95"), CONTEXT)
    assert query == "histogram_quantile(0.95, x)"
    with pytest.raises(QueryTemplateError, match=r"'args\.quantile' \(known: no args given\)"):
        render_query(metric("{{ args.quantile }}"), CONTEXT)


def test_undefined_variables_are_named_as_before() -> None:
    with pytest.raises(QueryTemplateError) as caught:
        render_query(metric("{{ canary.servce }}"), CONTEXT)
    assert str(caught.value) == (
        "metric \"x\": query uses undefined variable 'canary.servce' (known: canary.service, canary.revision)"
    )
    component_type = ComponentType("t", "test", "template: {{ component.properties.queue }}")
    with pytest.raises(TemplateProblem) as problem:
        component_type.render({"component": {"name": "web", "properties": {"topic": "a"}}})
    assert str(problem.value) == (
        "template uses undefined variable 'component.properties.queue' (known: component.properties.topic)"
    )


def test_a_component_type_can_still_fail_on_purpose() -> None:
    component_type = ComponentType(
        "t", "test", "{% if not component.ports %}{{ fail('needs ports') }}{% endif %}"
    )
    with pytest.raises(TemplateProblem, match=r"^needs ports$"):
        component_type.render({"component": {"name": "web", "ports": []}})


def test_a_worker_killed_from_outside_is_replaced(renderer: Renderer) -> None:
    renderer.render(QUERY, "warm", (), {})
    for pid in renderer.worker_pids():
        os.kill(pid, signal.SIGKILL)
    assert wait_until_gone(renderer.worker_pids()) == []
    # Dead idle workers are noticed and replaced: the caller sees none of it.
    assert renderer.render(QUERY, "{{ n }} after a kill", ("n",), {"n": 2}) == "2 after a kill"


def test_a_worker_that_keeps_dying_is_a_problem_not_an_exception() -> None:
    # The CPU-time backstop (below the wall-time bound here) kills the worker: twice, then a problem.
    with Renderer(workers=1, timeout=30.0, cpu_seconds=0.5) as renderer:
        started = time.monotonic()
        with pytest.raises(TemplateProblem) as caught:
            renderer.render(QUERY, NESTED_LOOPS, (), {})
        assert time.monotonic() - started < WITHIN
        assert (
            str(caught.value)
            == "query template could not be rendered: its worker process ended (killed by SIGXCPU)"
        )
        assert renderer.render(QUERY, "fine", (), {}) == "fine"


def test_close_stops_the_workers() -> None:
    with Renderer(workers=2) as closing:
        closing.render(QUERY, "a", (), {})
        pids = closing.worker_pids()
        assert pids
    assert wait_until_gone(pids) == []
    with pytest.raises(TemplateProblem, match="the operator is stopping"):
        closing.render(QUERY, "b", (), {})


def test_workers_do_not_outlive_their_parent() -> None:
    script = (
        "import sys\n"
        "from operators.templating.renderer import Renderer, TemplateKind\n"
        "from operators.templating.sandbox import Wording\n"
        "r = Renderer(workers=1)\n"
        "r.render(TemplateKind(Wording('query', 'query template'), 100), 'x', (), {})\n"
        "print(r.worker_pids()[0], flush=True)\n"
        "sys.stdin.read()\n"  # until the test kills us
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        assert alive(worker)
    finally:
        parent.kill()  # no atexit, no close(): the worker sees its socket end
        parent.wait()
    assert wait_until_gone([worker]) == []
