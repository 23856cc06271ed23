# Chaos: SIGKILLs of ferryd, backend faults and outages while clients log (tests/test_chaos.py).
ferry_py_test(chaos test_chaos 300)
