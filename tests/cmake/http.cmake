# The HTTP engine's tests: built from its own sources (not ferryd_core), so that
# they build while other daemon modules are half-written.
add_executable(test_http ${PROJECT_SOURCE_DIR}/tests/test_http.c ${PROJECT_SOURCE_DIR}/daemon/http.c
                         ${PROJECT_SOURCE_DIR}/daemon/log.c)
target_include_directories(test_http PRIVATE ${PROJECT_SOURCE_DIR}/daemon ${PROJECT_SOURCE_DIR}/tests
                                             ${PROJECT_SOURCE_DIR}/proto/include)
# Fallback for running the binary by hand; FERRY_SOURCE_DIR in the environment wins.
target_compile_definitions(test_http PRIVATE FERRY_TEST_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
target_link_libraries(test_http PRIVATE proto PkgConfig::UV PkgConfig::CURL PkgConfig::CRYPTO
                                        PkgConfig::CJSON)
add_test(NAME http COMMAND test_http)
set_tests_properties(http PROPERTIES ENVIRONMENT "${FERRY_TEST_ENV}" TIMEOUT 300)
