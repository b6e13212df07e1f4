"""LLM providers. Only the offline `echo` provider exists so far (SPEC §5)."""
