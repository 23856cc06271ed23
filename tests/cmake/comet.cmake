# The Comet backend against the stand-in (tests/comet_standin.py).
ferry_py_test(comet test_comet 600)
ferry_py_test(comet_resume test_comet_resume 300)
ferry_py_test(comet_big test_comet_big 900)
