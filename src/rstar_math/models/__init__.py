"""Model builders (tiny models for tests; the built-in miniature model)."""
