ferry_py_test(download test_download 600)
