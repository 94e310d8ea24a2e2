"""Pipeline files, the `fedsilo` CLI, MLflow tracking and the run driver.

Imports every other package of fedsilo; nothing imports it.
"""
