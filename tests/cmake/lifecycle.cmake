# ferryd under systemd and operators: sd_notify readiness, socket activation
# (systemd-socket-activate), SIGHUP reload, journal log lines, --log-level,
# the detached ferryd's one line, a second ferryd's one error (tests/test_lifecycle.py).
ferry_py_test(lifecycle test_lifecycle 180)
