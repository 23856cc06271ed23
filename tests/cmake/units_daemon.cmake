# Unit tests of the daemon's modules against fakes of their neighbours, in
# libuv's style (tests/uvtest.h): one process per test, each with its own loop
# and temporary directory; the loop must close with no handle left and no
# descriptor may stay open. They run in both builds, the sanitizers included.
ferry_c_test(test_scheduler test_scheduler.c)
ferry_c_test(test_server test_server.c)
ferry_c_test(test_ops test_ops.c)
ferry_c_test(test_backend_local test_backend_local.c)
# The Comet backend against tests/comet_standin.py, which each test starts on 127.0.0.1.
ferry_c_test(test_backend_comet test_backend_comet.c)
target_compile_definitions(test_backend_comet PRIVATE FERRY_TEST_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
