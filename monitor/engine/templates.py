"""Alert text: Jinja2 in an immutable sandbox with StrictUndefined, autoescape off.

Alert text is plain text; every channel escapes it for its own medium. Templates are compiled once
when rules load, and statically refused when they reach for private or dunder attributes.
"""

from __future__ import annotations

import functools
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


class TemplateProblem(ValueError):
    """A template that cannot be compiled or rendered."""


def _refuse_private(tree: nodes.Template) -> None:
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            name: Any = node.attr
        else:
            name = getattr(getattr(node, "arg", None), "value", None)
        if isinstance(name, str) and name.startswith("_"):
            raise TemplateProblem(f"access to {name!r} is refused by the sandbox")


@functools.lru_cache(maxsize=1024)
def _compile(source: str) -> Any:
    try:
        tree = _ENV.parse(source)
        _refuse_private(tree)
        return _ENV.from_string(tree)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message} (template line {exc.lineno})") from None


def compile_template(source: Any) -> Any:
    """Compile a template string once; raise TemplateProblem on syntax errors or unsafe access."""
    if not isinstance(source, str):
        raise TemplateProblem("a template must be text")
    return _compile(source)  # compiled once per distinct source: rule variants of test cases share it


def render(template: Any, context: dict[str, Any]) -> str:
    """Render; raise TemplateProblem saying what went wrong (undefined name, sandbox refusal, ...)."""
    try:
        return str(template.render(context))
    except SecurityError as exc:
        raise TemplateProblem(f"refused by the sandbox: {exc}") from None
    except TemplateError as exc:
        raise TemplateProblem(f"template error: {exc}") from None
    except Exception as exc:  # a filter applied to the wrong type, a division by zero: the rule's bug
        raise TemplateProblem(f"template error: {type(exc).__name__}: {exc}") from None
