"""`budget-edge bench`: latency, accuracy and compute per budget, measured through the
runtime (measure.py), the reports it writes (report.py) and the statistics that say
whether a difference is real (significance.py); interleaved.py times a few calls side by
side for the scripts in benchmarks/.

Torch-free, like the runtime it measures; separate from it because a device that only
runs a model needs none of this (the latency controller of `serve` uses `measure` to
build its table at start).
"""
