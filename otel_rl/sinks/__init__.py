"""Sinks: the contract, the registry and one module per backend (each imports its SDK lazily)."""
