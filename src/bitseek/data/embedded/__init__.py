"""Built-in benchmarks made from real data that ships inside PyPI packages (no download)."""
