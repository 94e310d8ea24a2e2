#!/usr/bin/env bash
# Start a Ray head node for fedsilo and print the address silos and `fedsilo run --address` use.
#
#   infra/ray-head.sh                    # head on 127.0.0.1 (one machine; what the tests use)
#   NODE_IP=10.0.0.5 infra/ray-head.sh   # head reachable by other organizations' nodes
#   fedsilo run pipeline.toml --address 127.0.0.1:6379
#   ray stop                             # when done
set -euo pipefail
NODE_IP="${NODE_IP:-127.0.0.1}"
PORT="${PORT:-6379}"
# The head runs the orchestrator and the driver; it needs no silo resource and no GPU.
ray start --head --node-ip-address "$NODE_IP" --port "$PORT" \
  --dashboard-host 127.0.0.1 --num-cpus "${NUM_CPUS:-2}" --disable-usage-stats
echo "fedsilo: ray head at $NODE_IP:$PORT; run: fedsilo run PIPELINE --address $NODE_IP:$PORT"
