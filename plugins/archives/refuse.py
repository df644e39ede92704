"""The two ways an archive is refused: ``BadArchive`` (unsafe or broken) and ``TooLarge``.

Messages name the file and the reason. Any text taken from the archive (an entry name, an
exception's message) is clipped with :func:`wfserve.kernel.redact.clip` where it is put in; the
reason as a whole is clipped again here, so no refusal can carry megabytes into an answer or a log.
"""

from __future__ import annotations

from pathlib import Path

from wfserve.kernel.errors import BadArchive
from wfserve.kernel.errors import TooLarge
from wfserve.kernel.redact import clip

#: the longest reason a refusal states (the clipped outside texts it quotes fit well under it)
REASON_LIMIT = 2048


def bad(source: Path, reason: str) -> BadArchive:
    """A ``BadArchive`` whose message names the file and the (clipped) reason."""
    reason = clip(reason, REASON_LIMIT)
    return BadArchive(f"{source.name}: {reason}", path=str(source), reason=reason)


def too_large(source: Path, what: str, *, reason: str, limit: int) -> TooLarge:
    """A ``TooLarge`` saying ``"<file name> <what>"`` (``what``: "has more than 10 entries")."""
    return TooLarge(f"{source.name} {clip(what, REASON_LIMIT)}", path=str(source),
                    reason=reason, limit=limit)
