"""Agent worker processes: sizing, the parent-side host actor, the child runtime."""
