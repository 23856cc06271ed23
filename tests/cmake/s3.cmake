# add_remote with S3 sync (issue 13): the S3 client's pure parts, and the
# acceptance tests against s3rver (installed into tests/node_modules by
# scripts/setup.sh) with boto3 as the independent client.
ferry_c_test(test_s3 test_s3.c)
ferry_py_test(s3 test_s3 600)
