"""The one name rule for workflows, versions and nodes, shared by registration, specs, the
snapshot store and the archive builder.

TorchServe accepts any workflow name. wfserve accepts any non-empty name too (spaces and any
script included), except one that could name another file or split a line: a path separator
(``/`` or ``\\``), ``..`` anywhere, ``.`` alone, or a control character (C0, DEL, C1, and the
Unicode line and paragraph separators). Always matched against the whole string
(:func:`is_valid_name`), so a trailing newline is refused like any other control character.
"""

from __future__ import annotations

import re

#: the rule in words, for error messages
NAME_RULE = ("a non-empty name other than '.', without '/', '\\', '..' or control characters "
             "(newlines included)")
_NAME = re.compile(r"(?!\.\Z)(?!.*\.\.)[^/\\\x00-\x1f\x7f-\x9f\u2028\u2029]+", re.DOTALL)


def is_valid_name(value: object) -> bool:
    """True when ``value`` is a string that follows the name rule in full."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None
