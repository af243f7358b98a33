"""The book's measured claims: one benchmark per chapter, named like the chapter's module.

Run one with ``python -m benchmarks.<name>`` from the repository's root (``--quick`` for a smoke
run into a temporary folder), or all of them with ``make bench``. Each measures the chapter's own
code (the notebook's cells tagged ``reused-by-benchmark``) and writes
``benchmarks/results/<name>.json`` and its figures under ``figs/``.
"""
