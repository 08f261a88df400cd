#!/usr/bin/env bash
# Write deploy/components/secrets/secrets.env with fresh secrets (never overwrites one).
#   bash deploy/init-secrets.sh                                  # bundled Redis
#   bash deploy/init-secrets.sh --external-redis rediss://...    # with components/external-redis
set -euo pipefail
cd "$(dirname "$0")"
target=components/secrets/secrets.env
redis_url=""
case "${1:-}" in
  --external-redis) redis_url="${2:?--external-redis needs the URL}" ;;
  "") ;;
  *) echo "usage: $0 [--external-redis URL]" >&2; exit 2 ;;
esac
if [ -e "$target" ]; then
  echo "$target exists; not overwriting it" >&2
  exit 1
fi
# $1 random bytes, URL-safe base64 (safe in a Redis URL and in sed).
secret() { head -c "$1" /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
client_key="r3d_$(secret 32)"
metrics_key="r3d_$(secret 32)"
umask 077
{
  echo "REDIS_PASSWORD=$(secret 32)"
  echo "REWARD3D_API_KEYS=${client_key},${metrics_key}"
  echo "METRICS_API_KEY=${metrics_key}"
  if [ -n "$redis_url" ]; then echo "REWARD3D_REDIS_URL=${redis_url}"; fi
} > "$target"
echo "wrote deploy/$target"
echo "API key for clients: ${client_key}"
