"""Reports: the result table (and, later, plots and galleries)."""
