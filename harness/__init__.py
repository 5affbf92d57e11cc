"""CycleQD harness: the domain-independent core (QD loop, merging, model store, runner, CLI)."""

__version__ = "0.1.0"
