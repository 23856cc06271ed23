# Trust boundaries: a second user on the node, foreign state, descriptors, connection hygiene (tests/test_trust.py).
ferry_py_test(trust test_trust 600)
