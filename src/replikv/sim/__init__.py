"""Deterministic simulation: the real node cores in a simulated world driven by one seed."""
