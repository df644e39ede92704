"""The S3 plugin's settings (``settings.of(S3Settings)``).

They join wfserve's one settings table through ``wfserve_settings``: flags
(``--s3-endpoint-url``), ``WFSERVE_S3_ENDPOINT_URL``, YAML keys and ``wfserve settings``.
Credentials are not settings: boto3 finds them (its usual chain: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, the shared files, an
instance or container role), and wfserve never sees, logs or stores them.
"""

from __future__ import annotations

from dataclasses import dataclass

from wfserve.kernel.settings import setting


@dataclass(frozen=True)
class S3Settings:
    """Where the S3-compatible store is; the download bounds are the built-in fetchers'
    (``max_download_size``, ``download_timeout``)."""

    s3_endpoint_url: str = setting(
        "", "plugin s3: the S3-compatible endpoint, e.g. http://127.0.0.1:9000 (MinIO, Ceph, "
        "moto); empty: AWS S3 itself."
    )
    s3_region: str = setting(
        "", "plugin s3: the region to sign requests for; empty: boto3's own choice "
        "(AWS_REGION, AWS_DEFAULT_REGION, the profile)."
    )
