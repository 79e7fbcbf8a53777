"""Gradient rules: (in progress)."""
