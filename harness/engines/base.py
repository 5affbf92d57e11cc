"""The chat-engine interface every generation backend implements (HF transformers, vLLM, plugins).

Kept apart from ``harness.engines`` (which builds engines and wraps them as agents) so that an engine
module imports only this interface, never the registry that lists it.
"""

from __future__ import annotations

from typing import Mapping, Sequence


class ChatEngine:
    """``load_state_dict(sd)`` swaps a child's weights into the already-built model (no rebuild per child);
    ``generate`` runs one batched greedy generation and answers ``harness.episodes.CONTEXT_LIMIT`` for a
    prompt longer than the context. ``seconds`` accumulates wall time per phase ("load", "generate")."""

    seconds: dict

    def load_state_dict(self, state_dict: Mapping) -> None:
        raise NotImplementedError

    def generate(self, conversations: Sequence[list[dict]], *, prefill: str = "", stop: Sequence[str] | None = None,
                 max_new_tokens: int = 512) -> list[str]:
        raise NotImplementedError
