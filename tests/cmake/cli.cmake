# The ferry CLI against a real ferryd: pause/resume, cache, ls --limit, usage
# errors, and the download progress line on a pseudo-terminal.
ferry_py_test(cli test_cli 300)
