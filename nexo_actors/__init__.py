"""nexo_actors: an actor-model runtime for LLM agents.

The public surface is small on purpose: the CLI (`nexo`) is how operators
drive the runtime; the modules are importable for tests and embedding.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
