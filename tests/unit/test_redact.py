from wfserve.kernel.redact import clip
from wfserve.kernel.redact import has_credentials
from wfserve.kernel.redact import redact_url


def test_credentials_are_hidden():
    assert redact_url("https://bob:s3cret@host:8443/a/b.war?x=1") == "https://***@host:8443/a/b.war?x=1"
    assert "s3cret" not in redact_url("http://s3cret@host/x.mar")
    assert has_credentials("http://u:p@h/x")


def test_plain_urls_and_names_are_unchanged():
    for url in ("https://host/a@b.war", "seq_wf.war", "file:///srv/x.war", "a@b.war"):
        assert redact_url(url) == url


def test_clip_bounds_text():
    assert clip("short") == "short"
    long = "x" * 10_000
    assert len(clip(long)) < 600
    assert clip(long).endswith("(9488 more characters)")
