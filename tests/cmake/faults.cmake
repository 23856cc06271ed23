# The fault matrix and the retry policy against hostile servers (tests/test_faults.py).
ferry_py_test(faults test_faults 600)
