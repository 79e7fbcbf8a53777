"""Finite-difference cases for the gradient rules, one module per rules module."""
