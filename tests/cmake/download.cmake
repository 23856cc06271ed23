ferry_py_test(download test_download 600)

# Under ASan, test_download's python subprocess loads the instrumented libferry.so:
# preload the sanitizer runtimes as python.cmake does.
if(FERRY_SANITIZE)
  execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=libasan.so
                  OUTPUT_VARIABLE ferry_dl_libasan OUTPUT_STRIP_TRAILING_WHITESPACE)
  execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=libubsan.so
                  OUTPUT_VARIABLE ferry_dl_libubsan OUTPUT_STRIP_TRAILING_WHITESPACE)
  set_property(TEST download APPEND PROPERTY ENVIRONMENT
               "LD_PRELOAD=${ferry_dl_libasan}:${ferry_dl_libubsan}"
               "ASAN_OPTIONS=detect_leaks=0:abort_on_error=1")
endif()
