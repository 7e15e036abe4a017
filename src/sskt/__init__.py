"""sskt: Self-Supervised Knowledge Transfer via Loosely Supervised Auxiliary Tasks (WACV 2022), with baselines."""

__version__ = "0.1.0"
