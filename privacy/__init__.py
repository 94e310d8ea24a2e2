"""Encryption, key handling and aggregation maths shared by silos and the orchestrator.

This package imports nothing else of fedsilo's: silos and the orchestrator import it.
"""
