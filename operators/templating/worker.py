"""A template worker process: renders users' templates with its own memory and CPU bounds.

Started by `renderer.Renderer` as a fresh interpreter that imports jinja2 and
the sandbox, nothing of the operator (by hand: ``python -m
operators.templating.worker FD MEMORY_LIMIT CPU_SECONDS``). It speaks over one socket (FD), a message
being JSON in `multiprocessing.connection` framing:

- first it says ``{"ready": true, "vsz": ..., "rss": ...}`` (its baseline, in bytes);
- then, for each request ``{"kind": [subject, template, max_output, helpers],
  "source": ..., "names": [...], "values": {...}}``, it answers
  ``{"text": ...}``, ``{"problem": ...}`` or ``{"memory": true}``; after
  ``memory`` it exits (the parent starts a fresh worker), since what a
  failed allocation leaves behind is not worth trusting.

The worker ends when the socket does (the parent exited), when its CPU-time
backstop runs out (SIGXCPU), or when the parent kills it for taking too long.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import sys
from collections import OrderedDict
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import jinja2

from operators.templating.sandbox import (
    BoundedSandbox,
    TemplateProblem,
    Wording,
    compile_template,
    fail,
    render_bounded,
    wrap,
)

# Functions a kind of template may call, by the name it sends (component types get `fail`).
HELPERS: dict[str, Callable[..., Any]] = {"fail": fail}
# Compiled templates kept, by source text: a type or query seen on every pass is parsed once.
COMPILED_CACHE = 128

# (subject, template, max_output, helpers): what the worker needs to know of a kind.
KindKey = tuple[str, str, int, tuple[str, ...]]


class Templates:
    """Environments per kind and compiled templates per source, in one worker."""

    def __init__(self) -> None:
        self._environments: dict[KindKey, BoundedSandbox] = {}
        self._compiled: OrderedDict[tuple[KindKey, tuple[str, ...], str], jinja2.Template] = OrderedDict()

    def environment(self, kind: KindKey) -> BoundedSandbox:
        environment = self._environments.get(kind)
        if environment is None:
            subject, template, max_output, helpers = kind
            environment = BoundedSandbox(Wording(subject=subject, template=template), max_output)
            for name in helpers:
                environment.globals[name] = HELPERS[name]
            self._environments[kind] = environment
        return environment

    def compiled(self, kind: KindKey, names: tuple[str, ...], source: str) -> jinja2.Template:
        key = (kind, names, source)
        template = self._compiled.get(key)
        if template is None:
            template = compile_template(self.environment(kind), source, names)
            self._compiled[key] = template
            if len(self._compiled) > COMPILED_CACHE:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(key)
        return template

    def render(self, request: dict[str, Any]) -> str:
        subject, template, max_output, helpers = request["kind"]
        kind: KindKey = (str(subject), str(template), int(max_output), tuple(helpers))
        compiled = self.compiled(kind, tuple(request["names"]), request["source"])
        # Namespaces are rebuilt here: they name an undefined variable by its path (canary.servce).
        variables = {name: wrap(name, value) for name, value in request["values"].items()}
        return render_bounded(compiled, variables)


def answer(templates: Templates, request: dict[str, Any], cpu_seconds: float) -> dict[str, Any]:
    """The reply to one request; ``{"memory": True}`` when the memory bound was hit."""
    out_of_memory = False
    try:
        _allow_cpu(cpu_seconds)
        return {"text": templates.render(request)}
    except TemplateProblem as problem:
        return {"problem": str(problem)}
    except MemoryError:
        out_of_memory = True  # answered below, once the traceback (and what it holds) is gone
    except Exception as error:  # RecursionError while parsing, a request we do not understand...
        return {"problem": f"{request['kind'][1]} failed: {type(error).__name__}: {error}"}
    assert out_of_memory
    return {"memory": True}


def serve(connection: Connection, cpu_seconds: float) -> None:
    templates = Templates()
    while True:
        try:
            request = json.loads(connection.recv_bytes())
        except (EOFError, OSError):
            return  # the parent is gone or closed us
        reply = answer(templates, request, cpu_seconds)
        connection.send_bytes(json.dumps(reply, ensure_ascii=False).encode())
        if reply.get("memory"):
            return


def memory_use() -> tuple[int, int]:
    """(VSZ, RSS) of this process in bytes, from /proc (zeros where there is none)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            size, resident = (int(field) for field in statm.read().split()[:2])
    except (OSError, ValueError):
        return 0, 0
    page = os.sysconf("SC_PAGE_SIZE")
    return size * page, resident * page


def limit_self(memory_limit: int) -> None:
    """Bound this process's address space; no core files; first in line for the OOM killer."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        memory_limit = min(memory_limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        # If the container runs out of memory anyway, the kernel kills a worker, not the operator.
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as adjust:
            adjust.write("1000")
    except OSError:
        pass


def _allow_cpu(cpu_seconds: float) -> None:
    """A CPU-time backstop for this request (RLIMIT_CPU counts the whole life of the process).

    The parent kills a render that outlives its wall-time bound; this ends one even
    if the parent cannot (it died mid-render): SIGXCPU terminates the worker.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + cpu_seconds)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def main(argv: list[str]) -> None:
    fd, memory_limit, cpu_seconds = int(argv[0]), int(argv[1]), float(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the operator; it stops its workers
    connection = Connection(fd)
    vsz, rss = memory_use()
    limit_self(memory_limit)
    connection.send_bytes(json.dumps({"ready": True, "vsz": vsz, "rss": rss}).encode())
    serve(connection, cpu_seconds)


if __name__ == "__main__":
    main(sys.argv[1:])
