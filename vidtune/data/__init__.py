"""Datasets: folder/manifest loading and the built-in synthetic sample dataset."""
