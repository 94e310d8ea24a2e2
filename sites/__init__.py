"""Federated clusters: each organization runs its own Ray cluster and serves its silo to the
federation through an outbound, mutually authenticated gateway (`fedsilo site serve`)."""
