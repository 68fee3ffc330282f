"""hybrid: small hybrid attention/feed-forward/QRNN language models, from training to on-device runtime."""

__version__ = "0.1.0"
