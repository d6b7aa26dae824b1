"""Rule loading errors, each ``FILE:LINE: RULE_ID: message``."""

from __future__ import annotations


class RuleLoadError(Exception):
    """Rules that cannot be loaded; ``errors`` holds one ``FILE:LINE: RULE_ID: message`` per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class ErrorSink:
    """Collects errors; the loader reports all of them at once instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []  # the rules load, but `rules check` shows these

    def add(self, file: str, line: int, rule_id: str | None, message: str) -> None:
        self.errors.append(f"{file}:{line}: {rule_id or '-'}: {message}")

    def warn(self, file: str, line: int, rule_id: str | None, message: str) -> None:
        self.warnings.append(f"{file}:{line}: {rule_id or '-'}: {message}")

    def for_rule(self, file: str, rule_id: str | None) -> RuleErrors:
        return RuleErrors(self, file, rule_id)


class RuleErrors:
    """The sink bound to one file and rule."""

    def __init__(self, sink: ErrorSink, file: str, rule_id: str | None) -> None:
        self.sink = sink
        self.file = file
        self.rule_id = rule_id
        self.count = 0

    def add(self, line: int, message: str) -> None:
        self.count += 1
        self.sink.add(self.file, line, self.rule_id, message)

    def warn(self, line: int, message: str) -> None:
        self.sink.warn(self.file, line, self.rule_id, message)
