"""Durable state: the disk queue, dead letters and the inbox journal (broker.db)."""
