"""Emulated POWER KVM hosts: the L1 image (image), the KVM capability probe's output (kvmcaps)
and the L1 machines themselves (host), booted under TCG and then reached over SSH."""
