"""wfserve's default plugins, one package per kind of hook; see
``wfserve.kernel.plugins.BUILTIN``."""
