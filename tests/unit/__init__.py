"""Unit tests: pure modules of the harness, no QEMU, a few seconds in all."""
