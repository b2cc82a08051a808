"""Hostile input and access control (issue 14)."""
