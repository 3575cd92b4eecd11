"""Tools, not the library: the benchmark (``scripts/bench``) and the demo resource API."""
