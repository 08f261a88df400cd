#!/usr/bin/env bash
# Write .env for docker compose with fresh secrets (never overwrites an existing .env).
#   bash docker/init-env.sh          # GPU box: one worker per GPU (1, 2, 4 or 8; nvidia-smi -L)
#   bash docker/init-env.sh --cpu    # laptop: the weights-free CPU worker
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  --cpu) profile=cpu ;;
  --gpu | "")
    gpus=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU ' || true)
    if [ "$gpus" -ge 8 ]; then profile=gpu,gpus-8
    elif [ "$gpus" -ge 4 ]; then profile=gpu,gpus-4
    elif [ "$gpus" -ge 2 ]; then profile=gpu,gpus-2
    else profile=gpu
    fi
    echo "GPUs seen: ${gpus} (nvidia-smi -L); one worker per GPU, up to 8: COMPOSE_PROFILES=${profile}" ;;
  *) echo "usage: $0 [--gpu|--cpu]" >&2; exit 2 ;;
esac
if [ -e .env ]; then
  echo ".env exists; not overwriting it (remove it first to start over)" >&2
  exit 1
fi
# $1 random bytes, URL-safe base64 (safe in a Redis URL and in sed).
secret() { head -c "$1" /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
client_key="r3d_$(secret 32)"
metrics_key="r3d_$(secret 32)"
umask 077
sed -e "s|^COMPOSE_PROFILES=.*|COMPOSE_PROFILES=${profile}|" \
    -e "s|^REDIS_PASSWORD=.*|REDIS_PASSWORD=$(secret 32)|" \
    -e "s|^API_KEYS=.*|API_KEYS=${client_key},${metrics_key}|" \
    -e "s|^METRICS_API_KEY=.*|METRICS_API_KEY=${metrics_key}|" \
    -e "s|^RQ_DASHBOARD_PASSWORD=.*|RQ_DASHBOARD_PASSWORD=$(secret 18)|" \
    .env.example > .env
echo "wrote .env (mode 600, profile ${profile})"
echo "API key for clients: ${client_key}"
echo "  export REWARD3D_API_KEY=${client_key}   # the SDK and trainer read it"
