"""Text as the runtime stores it, and the short fields it accepts from clients.

Free text (messages, tool results, approval feedback, agent-switch reasons, error messages)
is stored as it came, but for one character: U+0000 (NUL) is stored as U+FFFD
(REPLACEMENT CHARACTER), on SQLite as on PostgreSQL. PostgreSQL's text types cannot hold
U+0000 at all; a rule for one engine only would make a session read back differently by
store. A lossless escape would have to escape its own escape character too, changing
ordinary text on the way back; NUL carries no meaning in a conversation (it comes from a
binary file a tool read, or a model's glitch), and U+FFFD is already what the runtime puts
for text that cannot be kept (a lone surrogate from the model), what a UTF-8 decoder shows
for undecodable bytes, and visible to a human and to the model. Values stored as JSON (tool
arguments, event data, a turn's replay log) keep U+0000: JSON escapes it.

Text the model wrote (and JSON decoded from it) may hold lone UTF-16 surrogates, which no
store, UTF-8 encoder or protobuf string takes: well_formed() repairs it, as browsers' JSON
decoders do.

Short fields (ids, names, keys, the model name, a session title) are not repaired but
refused when they do not fit: at most a documented number of characters, and no control
characters, which no such field has any use for.
"""

from __future__ import annotations

import re

NUL = "\x00"
REPLACEMENT_CHARACTER = "\ufffd"

_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")
SURROGATE = re.compile("[\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` as every store keeps it: U+0000 replaced by U+FFFD."""
    return text.replace(NUL, REPLACEMENT_CHARACTER)


def well_formed(text: str) -> str:
    """`text` with surrogate pairs joined and lone surrogates replaced by U+FFFD."""
    if text.isascii() or SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def short_text_problem(value: str, max_chars: int) -> str | None:
    """Why `value` cannot be a short field of at most `max_chars` characters; None if it can."""
    if len(value) > max_chars:
        return f"must be at most {max_chars} characters"
    if _CONTROL_CHARACTER.search(value) is not None:
        return "must not contain control characters (U+0000-U+001F, U+007F-U+009F)"
    return None
