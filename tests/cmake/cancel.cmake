# ferry cancel (queued, running, failed; Comet versions set to ERROR) and the
# spool_min_free guard (tests/test_cancel.py).
ferry_py_test(cancel test_cancel 180)
