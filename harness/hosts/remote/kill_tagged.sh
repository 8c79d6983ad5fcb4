#!/bin/sh
# The remote twin of hosts.kill_tagged: the argument after -name, matched as a prefix.
for d in /proc/[0-9]*; do
  tag=$(tr '\0' '\n' < "$d/cmdline" 2>/dev/null | sed -n '/^-name$/{n;p;q;}')
  case "$tag" in "$1"*) pid=${d#/proc/}; kill -9 "$pid" 2>/dev/null && echo "$pid";; esac
done
