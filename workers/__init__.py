"""Concrete processors built on frameflow, each runnable as Dramatiq worker processes."""
