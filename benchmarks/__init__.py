"""Benchmarks of APOLLO-AV on the synthetic world: analytic detectors and metrics (no downloaded
evaluators) and the `quality` driver that generates clips from scene specs and scores them."""
