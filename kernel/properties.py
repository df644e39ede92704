"""Java ``.properties`` files as ``java.util.Properties.load`` reads them (TorchServe's
``config.properties``).

- A *natural line* ends at ``\\n``, ``\\r`` or ``\\r\\n``. A line whose first non-blank
  character is ``#`` or ``!`` is a comment; a blank line is skipped.
- A line ending in an odd number of backslashes continues on the next one, whose leading
  blanks are dropped (the backslash is not part of the value).
- The key ends at the first unescaped ``=``, ``:`` or blank; blanks, then at most one ``=`` or
  ``:``, then blanks separate it from the value.
- In keys and values ``\\t``, ``\\n``, ``\\r``, ``\\f`` are those characters, ``\\uXXXX`` is
  one character, and a backslash before any other character is dropped: ``\\\\`` is one
  backslash, ``\\:``, ``\\=`` and ``\\ `` are literal. So ``allowed_urls=http://127\\\\.0.*``
  is the regex ``http://127\\.0.*``, as TorchServe sees it.
- A later key replaces an earlier one.

Then, as TorchServe's ``ConfigManager``: ``$$NAME$$`` in a value is the environment variable
``NAME`` (:func:`resolve_env_references`), and with ``enable_envvars_config=true`` the
variables ConfigManager names ``TS_*`` override their keys (:func:`apply_ts_variables`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path

from wfserve.kernel.errors import UsageError
from wfserve.kernel.torchserve_keys import TS_VARIABLES

#: read when no other config.properties is named and it exists, as TorchServe does
TS_DEFAULT_CONFIG = "config.properties"

_BLANK = " \t\f"
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


class PropertiesError(ValueError):
    """A malformed ``\\uXXXX`` escape, or a ``$$NAME$$`` naming an unset variable (Java
    throws ``IllegalArgumentException`` for both)."""


def parse_properties(text: str) -> dict[str, str]:
    """Every key and value of a ``.properties`` text (see the module docstring).

    :raises PropertiesError: a malformed ``\\uXXXX`` escape.
    """
    out: dict[str, str] = {}
    for line in _logical_lines(text):
        key, value = _split(line)
        out[_unescape(key)] = _unescape(value)
    return out


def _logical_lines(text: str) -> Iterator[str]:
    pending: str | None = None
    for raw in text.splitlines():
        line = raw.lstrip(_BLANK)
        if pending is None and (not line or line[0] in "#!"):
            continue
        if _continues(line):
            pending = (pending or "") + line[:-1]
            continue
        yield (pending or "") + line
        pending = None
    if pending is not None:
        yield pending


def _continues(line: str) -> bool:
    """Whether ``line`` ends in an odd number of backslashes."""
    count = len(line) - len(line.rstrip("\\"))
    return count % 2 == 1


def _split(line: str) -> tuple[str, str]:
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "=:" or ch in _BLANK:
            break
        i += 1
    key = line[:i]
    rest = line[i:].lstrip(_BLANK)
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(_BLANK)
    return key, rest


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "\\" or i + 1 >= n:
            out.append("" if ch == "\\" else ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u":
            digits = text[i + 2:i + 6]
            if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise PropertiesError(f"Malformed \\uxxxx encoding: \\u{digits}")
            out.append(chr(int(digits, 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


_ENV_REFERENCE = re.compile(r"\$\$([^$]+[^$])\$\$")


def resolve_env_references(props: Mapping[str, str], env: Mapping[str, str]
                           ) -> dict[str, str]:
    """``props`` with every ``$$NAME$$`` in a value replaced by the variable ``NAME`` of
    ``env``, as TorchServe's ConfigManager does before anything else reads them.

    :raises PropertiesError: a referenced variable is not set ("Invalid Environment
        Variable NAME", TorchServe's message).
    """
    def value_of(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise PropertiesError(f"Invalid Environment Variable {name}")
        return env[name]

    return {key: _ENV_REFERENCE.sub(value_of, value) for key, value in props.items()}


def apply_ts_variables(props: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """With ``enable_envvars_config`` true (Java's ``Boolean.parseBoolean``), each variable of
    :data:`~wfserve.kernel.torchserve_keys.TS_VARIABLES` set in ``env`` overrides its key; for
    ``TS_ALLOWED_URLS`` only when ``use_env_allowed_urls`` is also true (TorchServe)."""
    out = dict(props)
    if out.get("enable_envvars_config", "false").strip().lower() != "true":
        return out
    urls_too = out.get("use_env_allowed_urls", "false").lower() == "true"
    for name, key in TS_VARIABLES.items():
        if name in env and (key != "allowed_urls" or urls_too):
            out[key] = env[name]
    return out


# --- the file TorchServe reads, as its ConfigManager ends up with it ---------------------------


def read_properties(path: Path) -> dict[str, str]:
    """Read a Java ``.properties`` file (TorchServe's ``config.properties``): ``{key: value}``,
    escapes processed as ``java.util.Properties`` does (:mod:`wfserve.kernel.properties`).

    :raises UsageError: the file cannot be read, or holds a malformed ``\\uXXXX`` escape.
    """
    try:
        return parse_properties(path.read_text(encoding="latin-1"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    except PropertiesError as exc:
        raise UsageError(f"{path}: {exc}") from None


def ts_config_file(given: Path | None, env: Mapping[str, str]) -> Path | None:
    """The ``config.properties`` to read, found as TorchServe finds it: ``TS_CONFIG_FILE``,
    else ``given`` (``--ts-config``), else ``WFSERVE_TS_CONFIG``, else ``./config.properties``
    when it exists; None when there is none."""
    named = env.get("TS_CONFIG_FILE") or given or _env_path(env, "TS_CONFIG")
    if named:
        return Path(named)
    default = Path(TS_DEFAULT_CONFIG)
    return default if default.is_file() else None


def read_ts_config(path: Path, env: Mapping[str, str]) -> dict[str, str]:
    """A TorchServe ``config.properties`` as its ConfigManager ends up with it: read as Java
    reads it, ``$$NAME$$`` values resolved, ``TS_<KEY>`` variables applied when
    ``enable_envvars_config`` is true.

    :raises UsageError: unreadable, a malformed escape, or an unset ``$$NAME$$``.
    """
    props = read_properties(path)
    try:
        props = resolve_env_references(props, env)
    except PropertiesError as exc:
        raise UsageError(f"{path}: {exc}") from None
    props = apply_ts_variables(props, env)
    _refuse_unsupported(path, props)
    return props


def _refuse_unsupported(path: Path, props: Mapping[str, str]) -> None:
    """Keys that change what handlers receive in TorchServe, which wfserve does not
    implement: a non-default value is refused rather than silently ignored."""
    decode = props.get("decode_input_request", "true").strip()
    if decode.lower() != "true":
        raise UsageError(
            f"{path}: decode_input_request={decode} is not supported: wfserve decodes JSON and "
            "text request bodies for handlers as TorchServe does by default; remove the key",
            key="decode_input_request")
    envelope = props.get("service_envelope", "").strip()
    if envelope:
        raise UsageError(
            f"{path}: service_envelope={envelope} is not supported: wfserve passes request "
            "bodies to handlers without an envelope (TorchServe's default); remove the key",
            key="service_envelope")


def _env_path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get("WFSERVE_" + name)
    return Path(value) if value else None
