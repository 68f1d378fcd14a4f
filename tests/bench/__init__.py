"""Benchmarks: the hub measured where users feel it, against targets.

    python -m tests.bench [--quick] [--only NAME] [--runs N]

The hub runs as real ``beadhub serve`` processes on a throwaway database of
the local PostgreSQL (and the local Redis for the cross-instance rows); the
load comes from a separate generator process talking over real sockets on
127.0.0.1. Each scenario prints its figures with the ratio to its target.
Not part of ``make test``: the figures depend on the machine and its load.
See docs/benchmarks.md for the method and the latest figures.
"""
