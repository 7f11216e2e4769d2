"""revopt: revenue optimisation engine for online stores (platform plumbing: config, storage, CLI)."""

__version__ = "0.1.0"
