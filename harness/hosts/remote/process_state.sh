#!/bin/sh
# Where a process and each of its threads wait in the host's kernel: the state and wait channel
# from /proc, and the kernel stack where the host lets us read it (root). A QEMU whose monitor
# stopped answering is usually a main thread blocked in a KVM ioctl; this says which.
# $1: the PID; $2: how many lines of the host's kernel log to add (0: none).
pid=$1
[ -d "/proc/$pid" ] || { echo "(process $pid is gone)"; exit 0; }
for t in /proc/"$pid"/task/*; do
  tid=${t##*/}
  comm=$(cat "$t/comm" 2>/dev/null)
  state=$(sed -n 's/^State:[[:space:]]*//p' "$t/status" 2>/dev/null)
  echo "thread $tid ($comm): $state, wchan $(cat "$t/wchan" 2>/dev/null || echo '?')"
  if [ -r "$t/stack" ]; then sed 's/^/    /' "$t/stack" 2>/dev/null; fi
done
if [ "${2:-0}" -gt 0 ]; then
  echo
  echo "## the host's kernel log (last $2 lines)"
  dmesg 2>&1 | tail -n "$2"
fi
