"""Migration: plans (sequences of hops), one hop and its health check, migration domains, and
known defects as data."""
