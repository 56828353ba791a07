"""atreid: the reference pipeline for Anytime Person Re-Identification (AT-ReID).

Reproduces the Uni-AT model of "Towards Anytime Retrieval: A Benchmark for Anytime
Person Re-Identification" (IJCAI 2025) on AT-USTC and the classic ReID benchmarks.
"""

__version__ = "0.1.0"
