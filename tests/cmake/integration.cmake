# Integration tests: real ferryd and ferry processes, driven from Python.
ferry_py_test(roundtrip test_roundtrip 300)
ferry_py_test(durability test_durability 300)
ferry_py_test(concurrency test_concurrency 600)
ferry_py_test(validation test_validation 300)
ferry_py_test(wire_faults test_wire_faults 300)
ferry_py_test(library test_library 120)
