"""Domain adapters: one module per task family, each registering a ``harness.domain.Domain``."""
