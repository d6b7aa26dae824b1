"""The rule engine: load and validate YAML rules, evaluate events with persistent state, run rule tests.

The daemon calls ``ruleset_from_config(config)`` once and ``RuleSet.evaluate(event, state)`` for every
new event inside the poll transaction. The engine never does I/O; state goes through the StateStore.
"""

from monitor.engine.errors import RuleLoadError
from monitor.engine.explain import Explanation, explain
from monitor.engine.loader import load_ruleset, rule_files, ruleset_from_config, run_rule_tests
from monitor.engine.rules import Rule
from monitor.engine.ruleset import RuleSet
from monitor.engine.state import MemoryStateStore, StateStore
from monitor.engine.testing import TestResult

__all__ = [
    "Explanation",
    "MemoryStateStore",
    "Rule",
    "RuleLoadError",
    "RuleSet",
    "StateStore",
    "TestResult",
    "explain",
    "load_ruleset",
    "rule_files",
    "ruleset_from_config",
    "run_rule_tests",
]
