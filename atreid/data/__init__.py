"""Datasets: AT-USTC indexing and sampling, benchmark adapters and synthetic miniatures."""
