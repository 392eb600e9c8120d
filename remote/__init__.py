"""Configuration sources: Nacos, a live files tree, and memory (tests, replay)."""
