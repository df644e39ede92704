"""Default fetchers: resolve a workflow or model URL to a local path.

``wfserve.plugins.fetchers.local`` answers bare names (the stores) and ``file://``;
``wfserve.plugins.fetchers.http`` answers ``http(s)://``. Any other scheme is left to installed
plugins; when none answers, the kernel raises ``UnsupportedURL`` naming the URL.
"""
