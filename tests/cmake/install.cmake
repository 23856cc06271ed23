# The Debian package (scripts/package.sh, cpack -G DEB): contents, metadata, a scratch root
# where the binaries run, a C program builds with pkg-config and Debian's python3 logs through
# the packaged ferryd; a real `apt install` inside overlay mounts (root); systemd-analyze verify
# of the units; the man pages (tests/test_install.py).
ferry_py_test(install test_install 900)
