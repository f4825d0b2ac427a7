"""Real-process integration tests for replikv; see conftest.py and cluster.py."""
