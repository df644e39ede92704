"""The one name rule for workflows, versions and nodes, shared by registration, specs, the
snapshot store and the archive builder.

The archivers' rule: a letter or digit, then letters, digits, ``_``, ``-`` and ``.``. Always
matched against the whole string (:func:`is_valid_name`): ``re.match`` with ``$`` would let a
trailing newline through (``"nl\\n"``).
"""

from __future__ import annotations

import re

#: the rule as the archivers print it in their error messages
NAME_RULE = r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-.]*")


def is_valid_name(value: object) -> bool:
    """True when ``value`` is a string that follows the name rule in full."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None
