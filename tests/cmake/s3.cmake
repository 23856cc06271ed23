# add_remote with S3 sync (issue 13): the S3 client's pure parts, and the
# acceptance tests against s3rver (installed into tests/node_modules by
# scripts/setup.sh) with boto3 as the independent client.
ferry_c_test(test_s3 test_s3.c)
ferry_py_test(s3 test_s3 600)

# Under ASan the binding's subprocesses load the instrumented libferry.so into an
# uninstrumented python3: test_s3.py preloads the sanitizer runtimes for those
# only (not for s3rver's node).
if(FERRY_SANITIZE)
  execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=libasan.so
                  OUTPUT_VARIABLE ferry_s3_libasan OUTPUT_STRIP_TRAILING_WHITESPACE)
  execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=libubsan.so
                  OUTPUT_VARIABLE ferry_s3_libubsan OUTPUT_STRIP_TRAILING_WHITESPACE)
  set_property(TEST s3 APPEND PROPERTY ENVIRONMENT
               "FERRY_TEST_PYTHON_PRELOAD=${ferry_s3_libasan}:${ferry_s3_libubsan}")
endif()
