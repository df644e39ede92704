"""Downloading ``s3://<bucket>/<key>`` with boto3, under the rules of wfserve's own fetchers.

The rules, and the helpers that apply them, come from :mod:`wfserve.plugins.fetchers.common`
(a public module a fetcher plugin may import):

- The URL must fully match one of ``allowed_urls`` (TorchServe's check and its message "Given
  URL <url> does not match any allowed URL(s)"), and hold no ``..``.
- The object is asked about first (``HeadObject``): a missing bucket or key is TorchServe's
  "Workflow not found in workflow store: <url>" (``kind`` ``war``) or "Model not found at:
  <url>" (``mar``); one larger than ``max_download_size`` is refused (``TooLarge``) before a
  byte of it is read.
- The body (``GetObject``, ``If-Match`` the ETag seen, so an object replaced in between is
  refused rather than mixed) is streamed to ``<store>/.downloads/<uuid>/<name>`` (a new folder,
  a file created 0600 and never over an existing one, a name wfserve chooses), counted against
  ``max_download_size`` again while it streams, and abandoned once ``download_timeout`` seconds
  have passed since the fetch began; every network wait is bounded by ``download_timeout`` too,
  and botocore does not retry (a retry would run past the bound).
- Any failure removes the partial download and its folder; it is TorchServe's
  ``DownloadFailed("Failed to download archive from: <url>")`` with the reason as a field.

The key is everything after ``s3://<bucket>/``, taken literally (as the AWS CLI does: no
percent-decoding, ``?`` and ``#`` are part of the key). Proxy environment variables are
ignored, as the built-in http fetcher ignores them. ``block_private_addresses`` does not apply:
the host connected to is the operator's ``s3_endpoint_url`` (or AWS), never the URL's.
URLs in messages and logs have their credentials redacted; AWS credentials are never logged.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import BinaryIO
from typing import Protocol

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError
from botocore.exceptions import ConnectTimeoutError
from botocore.exceptions import ReadTimeoutError

from wfserve.kernel.errors import DownloadFailed
from wfserve.kernel.errors import TooLarge
from wfserve.kernel.errors import WfserveError
from wfserve.kernel.redact import clip
from wfserve.kernel.redact import redact_url
from wfserve.kernel.settings import Settings
from wfserve.plugins.fetchers.common import FetchSettings
from wfserve.plugins.fetchers.common import check_allowed
from wfserve.plugins.fetchers.common import check_relative
from wfserve.plugins.fetchers.common import create_exclusive
from wfserve.plugins.fetchers.common import discard
from wfserve.plugins.fetchers.common import download_dir
from wfserve.plugins.fetchers.common import download_name
from wfserve.plugins.fetchers.common import missing
from wfserve.plugins.fetchers.common import not_found
from wfserve_s3.settings import S3Settings

log = structlog.get_logger(__name__)
SCHEME = "s3://"
#: bytes read from the object at a time
CHUNK = 256 * 1024
#: S3's bucket naming rules (3 to 63 lower-case letters, digits, dots and hyphens)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
#: what S3 answers for a missing bucket or key (HeadObject has no body: just "404")
_MISSING = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound"})


class Readable(Protocol):
    """What :func:`copy` reads from (a botocore ``StreamingBody``, a file)."""

    def read(self, size: int, /) -> bytes: ...


@dataclass(frozen=True)
class S3Object:
    """Where an ``s3://`` URL points."""

    bucket: str
    key: str


def is_s3(url: str) -> bool:
    """Whether ``url``'s scheme is ``s3`` (any case)."""
    return url[: len(SCHEME)].lower() == SCHEME


def parse(url: str, kind: str) -> S3Object:
    """The bucket and key of ``s3://<bucket>/<key>`` (the key taken literally).

    :raises WorkflowNotFound | ModelNotFound: (by ``kind``) no valid bucket name (credentials
        in the URL included), an empty key, a key ending in ``/`` (a "folder") or holding NUL.
    """
    bucket, _, key = url[len(SCHEME):].partition("/")
    if not _BUCKET.fullmatch(bucket) or not key or key.endswith("/") or "\0" in key:
        raise not_found(url, kind, f"Invalid S3 URL: {redact_url(url)} (expected "
                                   "s3://<bucket>/<key>)")
    return S3Object(bucket, key)


def make_client(s3: S3Settings, timeout: float) -> Any:
    """A new S3 client of its own boto3 session (safe to make from any registering thread).

    Credentials come from boto3's chain; proxy variables are ignored; each connect and read
    waits at most ``timeout`` seconds; no retries.
    """
    config = Config(connect_timeout=timeout, read_timeout=timeout, proxies={},
                    retries={"mode": "standard", "total_max_attempts": 1})
    session = boto3.session.Session(region_name=s3.s3_region or None)
    return session.client("s3", endpoint_url=s3.s3_endpoint_url or None, config=config)


def copy(body: Readable, out: BinaryIO, *, url: str, limit: int, deadline: float,
         clock: Callable[[], float] = time.monotonic) -> int:
    """Copy ``body`` to ``out`` in :data:`CHUNK` pieces, counting.

    :returns: the bytes written.
    :raises TooLarge: more than ``limit`` bytes arrived (whatever the object's length said).
    :raises DownloadFailed: ``clock()`` passed ``deadline`` (reason ``timed out``).
    """
    shown = redact_url(url)
    written = 0
    while chunk := body.read(CHUNK):
        written += len(chunk)
        if written > limit:
            raise TooLarge(f"{shown} is larger than {limit} bytes", url=shown, limit=limit)
        if clock() > deadline:
            raise DownloadFailed(f"Failed to download archive from: {shown}", url=shown,
                                 reason="timed out")
        out.write(chunk)
    return written


def failure(exc: Exception, url: str, kind: str) -> WfserveError:
    """The wfserve error for a boto3 or file error while fetching ``url``: a missing bucket
    or key is TorchServe's not-found error (by ``kind``); anything else ``DownloadFailed``
    with the reason (S3's error code, ``timed out``, the exception's text, clipped), which is
    also logged as a warning (the answer's message does not carry it)."""
    shown = redact_url(url)
    status = None
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _MISSING or status == 404:
            return missing(url, kind)
        reason = clip(f"S3 {code or status}")
    elif isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        reason = "timed out"
    else:
        reason = clip(str(exc) or type(exc).__name__)
    log.warning("download failed", url=shown, reason=reason)
    return DownloadFailed(f"Failed to download archive from: {shown}", url=shown,
                          status=status, reason=reason)


def download(url: str, store: Path, settings: Settings, kind: str, *,
             clock: Callable[[], float] = time.monotonic) -> Path:
    """Download ``url`` into a new folder of ``store`` (see the module docstring).

    :param kind: ``war`` or ``mar``: which not-found error a missing object is.
    :param clock: the time source ``download_timeout`` is measured with (tests).
    :returns: ``<store>/.downloads/<uuid>/<name>``, a file this call created.
    :raises WorkflowNotFound | ModelNotFound: not allowed, ``..`` in the URL, not a valid
        ``s3://`` URL, or no such bucket or key.
    :raises TooLarge: over ``max_download_size`` (announced or counted).
    :raises DownloadFailed: refused by S3 (no credentials, access denied, the object replaced
        while downloading), unreachable, timed out, or the store is missing.
    """
    check_allowed(url, kind, settings)
    check_relative(url, kind)
    where = parse(url, kind)
    shown = redact_url(url)
    bounds = settings.of(FetchSettings)
    deadline = clock() + bounds.download_timeout
    try:
        client = make_client(settings.of(S3Settings), bounds.download_timeout)
        head = client.head_object(Bucket=where.bucket, Key=where.key)
    except (BotoCoreError, ClientError) as exc:
        raise failure(exc, url, kind) from None
    size = int(head.get("ContentLength", 0))
    if size > bounds.max_download_size:
        limit = bounds.max_download_size
        raise TooLarge(f"{shown} is larger than {limit} bytes", url=shown, limit=limit)
    try:
        folder = download_dir(store)
    except OSError as exc:
        raise DownloadFailed(f"Failed to download archive from: {shown}", url=shown,
                             reason=clip(exc)) from None
    target = folder / download_name(url)
    log.info("download started", url=shown, bytes=size)
    try:
        response = client.get_object(Bucket=where.bucket, Key=where.key, IfMatch=head["ETag"])
        body = response["Body"]
        try:
            with os.fdopen(create_exclusive(target), "wb") as out:
                written = copy(body, out, url=url, limit=bounds.max_download_size,
                               deadline=deadline, clock=clock)
        finally:
            body.close()
    except (BotoCoreError, ClientError, OSError) as exc:
        discard(folder)
        raise failure(exc, url, kind) from None
    except BaseException:
        discard(folder)
        raise
    log.info("download finished", url=shown, path=str(target), bytes=written)
    return target
