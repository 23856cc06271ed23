# The Python binding (client/python/ferry) against a real ferryd: Comet's
# example, argument rules, 1 GiB streamed with bounded memory, 8 processes in
# one experiment, a daemon that is not running, offline pip install.
ferry_py_test(python_binding test_python_binding 600)

# Under ASan the instrumented libferry.so is loaded into an uninstrumented
# python3: the sanitizer runtimes must be preloaded, and python's own
# interpreter-lifetime allocations are not leaks of ours. Here the whole
# module runs preloaded; other modules start the binding in a child process
# with ferrytest.binding_env(), which preloads FERRY_BINDING_PRELOAD (set for
# every Python test in tests/CMakeLists.txt).
if(FERRY_SANITIZE)
  set_property(TEST python_binding APPEND PROPERTY ENVIRONMENT "LD_PRELOAD=${FERRY_BINDING_PRELOAD}"
               "ASAN_OPTIONS=detect_leaks=0:abort_on_error=1")
endif()
