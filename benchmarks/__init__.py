"""Benchmarks for idme_passback: one suite, one entry point, one Markdown table.

Run ``python -m benchmarks --quick`` (under two minutes on two cores) or
``python -m benchmarks --full``. Every row compares the library with a peer
measured in the same invocation on the same machine. See README.md here.

Benchmarks are not tests: nothing here asserts a timing.
"""
