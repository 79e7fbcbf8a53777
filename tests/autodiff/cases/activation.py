"""Finite-difference cases (in progress)."""

CASES = []
