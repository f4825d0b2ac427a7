"""replikv: a replicated, fault-tolerant key-value store that speaks the Redis protocol."""

__version__ = "0.1.0"

# The clients need redis-py; they are imported on first use so that a node process, which
# imports this package too, does not load redis-py.
_CLIENT_EXPORTS = ("Client", "AsyncClient", "OutcomeUnknown")


def __getattr__(name: str) -> object:
    if name in _CLIENT_EXPORTS:
        from replikv import client

        return getattr(client, name)
    raise AttributeError(f"module 'replikv' has no attribute {name!r}")


__all__ = ["AsyncClient", "Client", "OutcomeUnknown", "__version__"]
