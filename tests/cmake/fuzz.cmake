# Coverage-guided fuzzing with libFuzzer (tests/fuzz/README.md): fuzz_frame (the
# frame reader), fuzz_request (the request decoder, the field getters and the value
# rules) and fuzz_s3xml (the parser of S3's XML answers, daemon/s3xml.c). gcc has no libFuzzer, so the targets are built by
# clang whatever compiler builds the rest; each test replays the seed corpus and
# the regressions, then fuzzes for FERRY_FUZZ_SECONDS. scripts/fuzz.sh runs longer.
set(FERRY_FUZZ_SECONDS 20 CACHE STRING "Seconds each fuzz target fuzzes under ctest (0: replay only)")

set(FERRY_FUZZ_SRC ${PROJECT_SOURCE_DIR}/tests/fuzz)
set(FERRY_FUZZ_DIR ${PROJECT_BINARY_DIR}/fuzz)
set(FERRY_FUZZ_TARGETS fuzz_frame fuzz_request fuzz_s3xml)
set(FERRY_FUZZ_FLAGS -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined
    -fno-sanitize-recover=all -fno-omit-frame-pointer
    -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
    -Wno-unused-parameter -D_GNU_SOURCE)

# A clang that can link -fsanitize=fuzzer: the project's compiler if it is clang, else
# one on PATH. Debian's clang needs libclang-rt-14-dev for libFuzzer's runtime.
if(CMAKE_C_COMPILER_ID STREQUAL "Clang")
  set(FERRY_FUZZ_CC ${CMAKE_C_COMPILER})
else()
  find_program(FERRY_FUZZ_CLANG NAMES clang clang-14 DOC "clang that builds the libFuzzer targets")
  set(FERRY_FUZZ_CC ${FERRY_FUZZ_CLANG})
endif()

set(ferry_fuzz_skip "")
if(NOT FERRY_FUZZ_CC)
  set(ferry_fuzz_skip "no clang found (apt-get install clang libclang-rt-14-dev)")
else()
  file(MAKE_DIRECTORY ${FERRY_FUZZ_DIR})
  file(WRITE ${FERRY_FUZZ_DIR}/probe.c
       "#include <stddef.h>\n#include <stdint.h>\n"
       "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\n"
       "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)\n{\n"
       "        return d != NULL && n > 0 ? 0 : 0;\n}\n")
  execute_process(COMMAND ${FERRY_FUZZ_CC} ${FERRY_FUZZ_FLAGS} ${FERRY_FUZZ_DIR}/probe.c
                          -o ${FERRY_FUZZ_DIR}/probe
                  RESULT_VARIABLE ferry_fuzz_probe_rc OUTPUT_VARIABLE ferry_fuzz_probe_out
                  ERROR_VARIABLE ferry_fuzz_probe_out)
  if(NOT ferry_fuzz_probe_rc EQUAL 0)
    string(REGEX MATCH "[^\n]*(error|cannot find)[^\n]*" ferry_fuzz_why "${ferry_fuzz_probe_out}")
    if(NOT ferry_fuzz_why)
      set(ferry_fuzz_why "${ferry_fuzz_probe_rc}")
    endif()
    string(CONCAT ferry_fuzz_skip "${FERRY_FUZZ_CC} cannot link -fsanitize=fuzzer,address,undefined"
                  " (${ferry_fuzz_why}; apt-get install libclang-rt-14-dev)")
  endif()
endif()

if(ferry_fuzz_skip)
  message(STATUS "fuzz: skipping the libFuzzer tests ${FERRY_FUZZ_TARGETS}: ${ferry_fuzz_skip}")
  return()
endif()
message(STATUS "fuzz: libFuzzer targets built with ${FERRY_FUZZ_CC}; "
               "ctest fuzzes each for ${FERRY_FUZZ_SECONDS} s")

# The proto library's own sources and include directories, so that a file added there is
# fuzzed too.
get_target_property(ferry_fuzz_proto_dir proto SOURCE_DIR)
get_target_property(ferry_fuzz_proto_srcs proto SOURCES)
get_target_property(ferry_fuzz_proto_incs proto INCLUDE_DIRECTORIES)
set(ferry_fuzz_sources "")
foreach(src ${ferry_fuzz_proto_srcs})
  get_filename_component(src ${src} ABSOLUTE BASE_DIR ${ferry_fuzz_proto_dir})
  list(APPEND ferry_fuzz_sources ${src})
endforeach()
set(ferry_fuzz_includes -I${FERRY_FUZZ_SRC})
foreach(dir ${ferry_fuzz_proto_incs} ${CJSON_INCLUDE_DIRS})
  list(APPEND ferry_fuzz_includes -I${dir})
endforeach()
file(GLOB ferry_fuzz_headers CONFIGURE_DEPENDS ${FERRY_FUZZ_SRC}/*.h ${ferry_fuzz_proto_dir}/*.h
     ${ferry_fuzz_proto_dir}/include/*.h)

set(ferry_fuzz_outputs "")
foreach(target ${FERRY_FUZZ_TARGETS})
  set(out ${FERRY_FUZZ_DIR}/${target})
  if(target STREQUAL "fuzz_s3xml")
    # The S3 answer parser: one daemon source and expat.
    set(target_sources ${PROJECT_SOURCE_DIR}/daemon/s3xml.c)
    set(target_flags -I${FERRY_FUZZ_SRC} -I${PROJECT_SOURCE_DIR}/daemon)
    foreach(dir ${EXPAT_INCLUDE_DIRS})
      list(APPEND target_flags -I${dir})
    endforeach()
    set(target_libs ${EXPAT_LINK_LIBRARIES})
  else()
    set(target_sources ${ferry_fuzz_sources})
    set(target_flags ${ferry_fuzz_includes})
    set(target_libs ${CJSON_LINK_LIBRARIES})
  endif()
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${FERRY_FUZZ_CC} ${FERRY_FUZZ_FLAGS} ${target_flags}
            ${FERRY_FUZZ_SRC}/${target}.c ${target_sources} ${target_libs} -o ${out}
    DEPENDS ${FERRY_FUZZ_SRC}/${target}.c ${target_sources} ${ferry_fuzz_headers}
            ${PROJECT_SOURCE_DIR}/daemon/s3xml.h
    COMMENT "Building libFuzzer target ${target} with clang"
    VERBATIM)
  list(APPEND ferry_fuzz_outputs ${out})
  file(MAKE_DIRECTORY ${FERRY_FUZZ_DIR}/corpus/${target} ${FERRY_FUZZ_DIR}/artifacts/${target})

  # New inputs go to the build's corpus (first directory); seeds and regressions are read.
  set(corpora ${FERRY_FUZZ_DIR}/corpus/${target} ${FERRY_FUZZ_SRC}/seeds/${target})
  if(EXISTS ${FERRY_FUZZ_SRC}/regressions/${target})
    list(APPEND corpora ${FERRY_FUZZ_SRC}/regressions/${target})
  endif()
  if(FERRY_FUZZ_SECONDS GREATER 0)
    set(budget -max_total_time=${FERRY_FUZZ_SECONDS})
  else()
    set(budget -runs=0)
  endif()
  add_test(NAME ${target}
           COMMAND ${out} ${budget} -timeout=25 -rss_limit_mb=2048 -print_final_stats=1
                   -dict=${FERRY_FUZZ_SRC}/ferry.dict
                   -artifact_prefix=${FERRY_FUZZ_DIR}/artifacts/${target}/ ${corpora}
           WORKING_DIRECTORY ${FERRY_FUZZ_DIR})
  math(EXPR timeout "${FERRY_FUZZ_SECONDS} + 120")
  # Any report fails the test: libFuzzer exits non-zero on a crash, a leak, UB or a timeout.
  set_tests_properties(${target} PROPERTIES
    LABELS fuzz TIMEOUT ${timeout}
    ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1;UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1")
endforeach()
add_custom_target(ferry_fuzzers ALL DEPENDS ${ferry_fuzz_outputs})
