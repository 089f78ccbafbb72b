"""Golden behaviour of every shipped recipe and method builder (see tests/test_golden.py)."""
