# libferry and the ferry CLI: unit tests against a fake daemon served by a
# thread of the test (no ferryd needed). Links the static libferry, plus proto
# for the fake daemon's framing.
find_package(Threads REQUIRED)
set(FERRY_CLIENT_TEST_DIR ${CMAKE_CURRENT_LIST_DIR}/..)
add_executable(test_client ${FERRY_CLIENT_TEST_DIR}/test_client.c)
target_include_directories(test_client PRIVATE ${FERRY_CLIENT_TEST_DIR})
target_link_libraries(test_client PRIVATE ferry_static proto Threads::Threads)
target_compile_definitions(test_client PRIVATE FERRY_CLI_PATH="$<TARGET_FILE:ferry>")
add_dependencies(test_client ferry)
add_test(NAME test_client COMMAND test_client)
set_tests_properties(test_client PROPERTIES ENVIRONMENT "${FERRY_TEST_ENV}" TIMEOUT 120)
