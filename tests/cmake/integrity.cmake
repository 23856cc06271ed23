# Acceptance of the integrity issue: lying servers, damaged databases, stops, read-your-writes (tests/test_integrity.py).
ferry_py_test(integrity test_integrity 600)
