"""Benchmarks of the engine and the app (see README.md here); run each as `python -m bench.NAME` from the project
root."""
