"""Configuration: schema, `${...}` interpolation, loading with every error reported."""

from __future__ import annotations

from nexo_actors.config.load import Config, load_config

__all__ = ["Config", "load_config"]
