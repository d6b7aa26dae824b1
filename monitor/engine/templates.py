"""Alert text: Jinja2 in an immutable sandbox with StrictUndefined, autoescape off.

Alert text is plain text; every channel escapes it for its own medium. Templates are compiled once
when rules load, and statically refused when they reach for private or dunder attributes.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


class TemplateProblem(ValueError):
    """A template that cannot be compiled or rendered."""


# Filters that look attributes up by a name given as an argument (``attr('x')``, ``map(attribute='x')``).
_ATTRIBUTE_FILTERS = frozenset(
    {"attr", "map", "selectattr", "rejectattr", "sort", "groupby", "sum", "unique", "min", "max"}
)
# A str.format field that reaches an attribute or item starting with "_": "{0.__class__}", "{x[_y]}".
_PRIVATE_FORMAT_FIELD = re.compile(r"\{[^{}]*[.\[]_")


def _refuse_private(tree: nodes.Template) -> None:
    """Refuse at load time what the sandbox would refuse at render time, so `rules check` reports it.

    The sandbox still guards rendering; this only moves the error from a live alert to the check.
    """
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Filter):
            _refuse_private_filter(node)
            continue
        if isinstance(node, nodes.Getattr):
            name: Any = node.attr
            target = node.node
            if name in ("format", "format_map") and isinstance(target, nodes.Const):
                if isinstance(target.value, str) and _PRIVATE_FORMAT_FIELD.search(target.value):
                    raise TemplateProblem(
                        f"a format string reaching a private attribute ({target.value!r}) is refused "
                        "by the sandbox"
                    )
        else:
            name = getattr(getattr(node, "arg", None), "value", None)
        if isinstance(name, str) and name.startswith("_"):
            raise TemplateProblem(f"access to {name!r} is refused by the sandbox")


def _refuse_private_filter(node: nodes.Filter) -> None:
    if node.name not in _ATTRIBUTE_FILTERS:
        return
    arguments = [*node.args, *(pair.value for pair in node.kwargs)]
    if node.name == "attr" and not all(isinstance(arg, nodes.Const) for arg in arguments):
        raise TemplateProblem("attr() with a computed name is refused by the sandbox (it cannot be checked)")
    for arg in arguments:
        if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
            if any(part.startswith("_") for part in arg.value.split(".")):
                raise TemplateProblem(f"access to {arg.value!r} is refused by the sandbox")


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
