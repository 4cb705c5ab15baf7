"""Rendering results as tables and documents (derived from the typed results)."""
