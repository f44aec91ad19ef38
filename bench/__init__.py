"""fastloss's benchmarks: `python -m bench` from a checkout, or `fastloss bench` once installed.
One harness (harness.py) and one case list per family (pointwise.py, ...)."""
