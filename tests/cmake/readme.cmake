# README.md's command blocks run as written (tests/test_readme.py; its Install
# blocks run in tests/test_install.py).
ferry_py_test(readme test_readme 600)
