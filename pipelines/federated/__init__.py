"""Federated clusters from the pipeline's side: the coordinator's gateway and proxies
(`coordinator`), the `fedsilo site` commands (`site_cli`), and sites on one machine (`local`)."""
