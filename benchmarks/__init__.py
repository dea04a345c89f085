"""Side-by-side benchmarks of frameflow, Dramatiq's stock brokers and raw redis-py.

Run ``python -m benchmarks`` from the repository root (``--help`` for the options);
``benchmarks/models.py`` measures the model processors on their own.
"""
