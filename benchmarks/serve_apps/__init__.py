"""Reference apps measured by ``benchmarks/bench_serve.py`` (not part of the package)."""
