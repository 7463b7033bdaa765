"""The synthetic world of captioned shapes, the built-in model's training script and `clipdex demo`.

Only `clipdex demo`, the benchmarks and the tests import this package; the library does not.
"""
