"""Pydantic models of everything ftplan reads from files (catalogs, jobs)."""
