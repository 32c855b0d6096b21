"""spire_py benchmarks: each figure next to a raw baseline measured in the same run.

``python -m benchmarks.run`` (``make bench``) runs them all, prints the table and
writes ``benchmarks/results.json``. ``--quick`` (or SPIRE_PY_BENCH_QUICK=1) uses
small sizes: the test suite's smoke runs that to check the benchmarks still work.
"""
