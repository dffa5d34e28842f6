"""Reliability tests grouped by what they protect (README "Reliability")."""
