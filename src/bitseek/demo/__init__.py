"""End-to-end demos on the built-in benchmarks (data that ships inside PyPI packages)."""
