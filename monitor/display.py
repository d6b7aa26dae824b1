"""Text from events and from upstream services, made safe to show to a person.

Event text (``msg``, names, emails) and upstream error messages are untrusted. Beyond markup, which each
medium escapes its own way (Slack entities, HTML autoescape), plain characters can deceive a reader:
- terminal controls: ESC and CSI sequences clear the screen, move the cursor or recolour a line; OSC 8 makes
  a hidden hyperlink; BEL, backspace and carriage return overwrite what was printed;
- bidi controls: U+202E shows ``exe.png`` as ``gnp.exe``; isolates and marks reorder a line the same way;
- line and paragraph separators (U+2028, U+2029, NEL, VT, FF) start a new line in some viewers but not in
  others, so one field can fake a second, official-looking line.

``safe_text`` is the one function every place a person reads such text uses (Slack, email text and HTML,
the report, console alerts, ``status`` and other CLI output, readable log lines): separators become ``\\n``,
every other control or bidi character becomes U+FFFD, which shows that something was there without acting.
"""

from __future__ import annotations

import re
from typing import Any

from markupsafe import Markup

REPLACEMENT = "\ufffd"

_LINE_BREAKS = re.compile("\r\n|[\r\x0b\x0c\x85\u2028\u2029]")
# C0 controls but tab and newline, DEL, C1 controls (CSI 0x9b, OSC 0x9d ...), and the bidi controls:
# ALM, LRM, RLM, the embeddings and overrides LRE..RLO, the isolates LRI..PDI.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe_text(value: object) -> str:
    """``value`` as text a person can read without being deceived: line breaks normalised to ``\\n``, every
    other control and bidi character replaced by U+FFFD. Letters, emoji and markup characters are kept (each
    medium escapes markup itself)."""
    text = "" if value is None else str(value)
    return UNSAFE.sub(REPLACEMENT, _LINE_BREAKS.sub("\n", text))


def one_line(value: object) -> str:
    """``safe_text`` on one line (whitespace collapsed): for subjects, table cells, headers and log lines."""
    return re.sub(r"\s+", " ", safe_text(value)).strip()


def safe_output(value: Any) -> Any:
    """A Jinja ``finalize`` hook: every ``{{ }}`` string through ``safe_text``, so no template can forget it.
    Markup is the template's own (autoescape made it); numbers and other values pass unchanged."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return safe_text(value)
    return value


def json_escape_unsafe(encoded: str) -> str:
    """Inside already encoded JSON: write the unsafe characters that ``json.dumps(ensure_ascii=False)`` leaves
    raw (C1 controls, bidi controls, U+2028/U+2029) as ``\\u`` escapes with four hex digits. The value a
    parser reads is unchanged; a person reading the line in a terminal sees the escape, not its effect."""
    return _JSON_RAW.sub(lambda match: f"\\u{ord(match.group()):04x}", encoded)


_JSON_RAW = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
