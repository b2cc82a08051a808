"""Chaos drills: the whole service in real processes, with its parts failing (issue 13)."""
