"""Benchmarks: train/evaluate for a fixed budget and record speed and quality as JSON.

    python -m benchmarks.run --suite fit [--fast] [--dataset fashion_mnist]

Suites register themselves in ``benchmarks.run.SUITES`` (name -> function); results go to
``benchmarks/results/`` with the hardware named in each record.
"""
