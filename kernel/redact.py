"""Keeping secrets and huge texts out of answers, logs and snapshots.

:func:`redact_url` hides the credentials a URL may carry (``https://user:secret@host/...``,
``?token=...`` style query values are left alone: they are the user's choice of URL, and the
registry answers with the URL as registered; only the userinfo part is a credential by
definition). :func:`clip` bounds any text taken from outside (an exception's message, a name)
before it goes into an error message or a log line.
"""

from __future__ import annotations

from urllib.parse import urlsplit
from urllib.parse import urlunsplit

#: what replaces the userinfo of a URL
REDACTED = "***"
#: the longest outside text put into a message or a log field
CLIP = 512


def has_credentials(url: str) -> bool:
    """True when ``url`` carries a ``user[:password]@`` part."""
    if "://" not in url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return "@" in url
    return "@" in parts.netloc


def redact_url(url: str) -> str:
    """``url`` with its ``user:password@`` replaced by ``***@``; other URLs unchanged.

    A URL that does not parse, but holds an ``@`` after its scheme, is cut to its scheme.
    """
    if not has_credentials(url):
        return url
    try:
        parts = urlsplit(url)
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit((parts.scheme, f"{REDACTED}@{host}", parts.path, parts.query,
                           parts.fragment))
    except (ValueError, IndexError):
        return url.split("://", 1)[0] + f"://{REDACTED}"


def clip(text: object, limit: int = CLIP) -> str:
    """``str(text)`` cut to ``limit`` characters, saying how much was cut."""
    value = str(text)
    if len(value) <= limit:
        return value
    return f"{value[:limit]}... ({len(value) - limit} more characters)"
