"""Everything that touches a silo's private data: loading, checks, training, publishing.

Importing this package is cheap (no Ray, no TenSEAL): `silo.serving` is loaded by
MLflow in environments that only have torch, pandas and numpy.
"""
