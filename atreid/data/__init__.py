"""Datasets: the benchmarks (one module each), their protocols, training labels and synthetic miniatures."""
