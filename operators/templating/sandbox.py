"""Jinja2 templates written by users, rendered inside the operator: sandboxed, strict, bounded.

Two kinds of user templates run here: PromQL queries (analysis) and component
types (applications). Both come from people who may create a resource, not
from the operator's authors, so both get the same treatment:

- Jinja2's sandbox (no attribute escapes such as ``''.__class__``), with the
  two operators that can exhaust memory or CPU in one line (``*``, ``**``) capped;
- strict undefined variables, reported by their full name
  (``canary.servce``, ``component.properties.queue``) with the names that do
  exist, never rendered as an empty string;
- output that stops at a size limit instead of filling the operator's memory;
- every failure turned into a one-line `TemplateProblem` (no Jinja traceback),
  worded for the template's kind by a `Wording`.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

# Caps for the operators that can allocate or compute without bound in a sandbox.
_MAX_EXPONENT = 64
_MAX_INT_BITS = 4096


class TemplateProblem(ValueError):
    """A template cannot be compiled or rendered; the message says why in one line."""


class TemplateFailed(jinja2.TemplateError):
    """Raised by a template itself through ``fail("...")``: the input is not what it accepts."""


@dataclass(frozen=True)
class Wording:
    """How problems name the template: ``query uses ...`` / ``query template failed ...``."""

    subject: str  # what the text is: "query", "template"
    template: str  # what the source is: "query template", "template"


class Namespace(Mapping[str, Any]):
    """A read-only group of template variables (``canary``, ``component.properties``...).

    It knows its own dotted name so that an undefined attribute is reported as
    ``canary.servce`` rather than Jinja's ``'dict object' has no attribute``.
    """

    def __init__(self, path: str, values: Mapping[str, Any]) -> None:
        self._path = path
        self._values = dict(values)

    @property
    def path(self) -> str:
        return self._path

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"<{self._path}>"


def wrap(path: str, value: Any) -> Any:
    """`value` with every mapping inside it a `Namespace` named after where it sits."""
    if isinstance(value, Mapping):
        return Namespace(path, {key: wrap(f"{path}.{key}", item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return [wrap(f"{path}[{index}]", item) for index, item in enumerate(value)]
    return value


def _plain(value: Any) -> Any:
    """`tojson` of a Namespace: its values as a dict (json.dumps calls this for what it cannot encode)."""
    if isinstance(value, Namespace):
        return dict(value)
    if isinstance(value, jinja2.Undefined):  # `{{ component.properties.x | tojson }}` with no x
        value._fail_with_undefined_error()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class _Undefined(jinja2.StrictUndefined):
    """StrictUndefined whose message says which variable the template got wrong."""

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        owner = self._undefined_obj
        if owner is jinja2.utils.missing:
            return f"undefined variable {self._undefined_name!r}"
        if isinstance(owner, Namespace):
            path = owner.path
            known = ", ".join(f"{path}.{key}" for key in owner) or f"no {path} given"
            return f"undefined variable '{path}.{self._undefined_name}' (known: {known})"
        return super()._undefined_message


class BoundedSandbox(SandboxedEnvironment):
    """Jinja2's sandbox (no attribute escapes), with `*` and `**` capped.

    The sandbox stops code execution, not resource exhaustion: `'a' * 10**10` or
    `9 ** 10**9` would take the operator's memory or CPU. These caps cover the
    one-liners; `render_bounded` caps the output.
    """

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, wording: Wording, max_output: int, **options: Any) -> None:
        super().__init__(undefined=_Undefined, autoescape=False, keep_trailing_newline=False, **options)
        self.wording = wording
        self.max_output = max_output
        self.policies["json.dumps_kwargs"] = {"sort_keys": True, "default": _plain}

    def getattr(self, obj: Any, attribute: str) -> Any:
        # `args.items` means the variable named "items" when there is one, not Mapping.items.
        if isinstance(obj, Namespace) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: jinja2.runtime.Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > _MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is above the limit of {_MAX_EXPONENT}")
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() * right > _MAX_INT_BITS:
                raise SecurityError("power result is too large")
            return operator.pow(left, right)
        # "*": repeating a string or list, or multiplying huge integers (e.g. squared in a loop).
        for seq, times in ((left, right), (right, left)):
            repeats = isinstance(seq, str | list | tuple) and isinstance(times, int)
            if repeats and len(seq) * times > self.max_output:
                raise SecurityError(
                    f"repeating a sequence {times} times exceeds the {self.wording.subject} size limit"
                )
        both_int = isinstance(left, int) and isinstance(right, int)
        if both_int and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
            raise SecurityError("product is too large")
        return operator.mul(left, right)


def fail(message: str) -> None:
    """``{{ fail("a webservice needs ports") }}``: a template refuses its input with a message."""
    raise TemplateFailed(str(message))


def compile_template(environment: BoundedSandbox, source: str, variables: tuple[str, ...]) -> jinja2.Template:
    """Parse `source`; refuse syntax errors and names outside `variables` (dotted names allowed).

    Names are checked on the whole template, so a typo in a branch not taken
    today is caught too. Globals (``range``, ``fail``) are not variables.
    """
    wording = environment.wording
    try:
        tree = environment.parse(source)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateProblem(
            f"{wording.template} has a syntax error on line {err.lineno}: {err.message}"
        ) from None
    top_level = {name.split(".")[0] for name in variables}
    unknown = sorted(jinja2.meta.find_undeclared_variables(tree) - top_level)
    if unknown:
        raise TemplateProblem(
            f"{wording.subject} uses undefined variable {unknown[0]!r} (variables: {', '.join(variables)})"
        )
    return environment.from_string(tree)


def render_bounded(template: jinja2.Template, variables: Mapping[str, Any]) -> str:
    """The stripped output; raises TemplateProblem on any error, or once it grows past the limit.

    The output is only returned once fully rendered: an error never yields a partial text.
    """
    environment = template.environment
    assert isinstance(environment, BoundedSandbox)
    wording = environment.wording
    try:
        text = _generate(template, variables, environment.max_output)
    except TemplateFailed as err:
        raise TemplateProblem(str(err.message)) from None
    except SecurityError as err:
        raise TemplateProblem(f"{wording.template} is not allowed by the sandbox: {err}") from None
    except jinja2.UndefinedError as err:
        raise TemplateProblem(f"{wording.subject} uses {err.message}") from None
    except jinja2.TemplateError as err:
        detail = err.message or type(err).__name__
        raise TemplateProblem(f"{wording.template} failed: {detail}") from None
    except MemoryError:
        raise  # the worker's memory bound, reported by the renderer (renderer.py)
    except Exception as err:  # user code: any Python error (1/0, int('x')...) is the template's fault
        raise TemplateProblem(f"{wording.template} failed: {type(err).__name__}: {err}") from None
    if text is None:
        raise TemplateProblem(f"{wording.subject} renders to more than {environment.max_output} characters")
    return text


def _generate(template: jinja2.Template, variables: Mapping[str, Any], limit: int) -> str | None:
    """The stripped output, or None as soon as it grows past `limit` (a loop gone wild)."""
    chunks: list[str] = []
    size = 0
    for chunk in template.generate(variables):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return "".join(chunks).strip()
