# Unit tests of the wire protocol and the daemon's modules, one file per module;
# each links ferryd_core (which brings proto).
ferry_c_test(test_proto test_proto.c)
ferry_c_test(test_store test_store.c)
ferry_c_test(test_spool test_spool.c)
ferry_c_test(test_cache test_cache.c)
ferry_c_test(test_fsutil test_fsutil.c)
ferry_c_test(test_config test_config.c)
ferry_c_test(test_writer test_writer.c)
ferry_c_test(test_recovery test_recovery.c)

# The daemon's include graph: no circle between its modules, no header of client/.
add_test(NAME include_graph COMMAND ${FERRY_PYTHON} ${PROJECT_SOURCE_DIR}/tests/include_graph.py
                                    ${PROJECT_SOURCE_DIR})
