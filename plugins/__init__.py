"""wfserve's default plugins, one package per kind of hook; see ``kernel.plugins.BUILTIN``."""
