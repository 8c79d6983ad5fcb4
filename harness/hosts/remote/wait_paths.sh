#!/bin/sh
# Exit 0 once every path exists, 3 if the process exits first, 1 when the polls run out.
pid=$1; polls=$2; shift 2; n=0
while :; do
  ok=1; for p in "$@"; do [ -e "$p" ] || ok=0; done
  [ "$ok" = 1 ] && exit 0
  kill -0 "$pid" 2>/dev/null || exit 3
  n=$((n + 1)); [ "$n" -ge "$polls" ] && exit 1
  sleep 0.02
done
