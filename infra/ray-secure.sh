#!/usr/bin/env bash
# Start a Ray node with token authentication and mutual TLS, for a cluster that spans
# organizations. Every node, and every driver that joins (fedsilo run --address), needs the
# same token and a certificate from the cluster's CA (infra/tls/make_certs.py).
#
#   python infra/tls/make_certs.py --out certs --node head=10.0.0.5 --node cleveland=10.0.0.12
#   ray get-auth-token --generate > token && chmod 600 token      # once; share it like a password
#   NODE=head NODE_IP=10.0.0.5 infra/ray-secure.sh head            # on the head
#   NODE=cleveland NODE_IP=10.0.0.12 SILO=cleveland infra/ray-secure.sh join 10.0.0.5:6379
#   # the driver, e.g. on the head: same exports, then
#   source <(NODE=head infra/ray-secure.sh env) && fedsilo run pipeline.toml --address 10.0.0.5:6379
set -euo pipefail
CERTS="${CERTS:-certs}"
NODE="${NODE:?set NODE to this node's certificate name}"
export RAY_USE_TLS=1
export RAY_TLS_CA_CERT="$CERTS/ca.crt"
export RAY_TLS_SERVER_CERT="$CERTS/$NODE.crt"
export RAY_TLS_SERVER_KEY="$CERTS/$NODE.key"
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH="${TOKEN_FILE:-$PWD/token}"
case "${1:-}" in
  env)
    for name in RAY_USE_TLS RAY_TLS_CA_CERT RAY_TLS_SERVER_CERT RAY_TLS_SERVER_KEY RAY_AUTH_MODE RAY_AUTH_TOKEN_PATH; do
      echo "export $name=${!name}"
    done ;;
  head)
    exec ray start --head --node-ip-address "${NODE_IP:-127.0.0.1}" --port "${PORT:-6379}" \
      --dashboard-host 127.0.0.1 --disable-usage-stats ${BLOCK:+--block} ;;
  join)
    resources="{}"
    [ -n "${SILO:-}" ] && resources="{\"silo:$SILO\": 1}"
    exec ray start --address "${2:?head address}" --node-ip-address "${NODE_IP:-127.0.0.1}" \
      --resources "$resources" --disable-usage-stats ${BLOCK:+--block} ;;
  *) echo "usage: $0 head | join HEAD:PORT | env" >&2; exit 2 ;;
esac
