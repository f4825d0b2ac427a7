"""replikv: a replicated, fault-tolerant key-value store that speaks the Redis protocol."""

__version__ = "0.1.0"
