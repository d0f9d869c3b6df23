"""What is specific to one backend; what the backends share is tested in tests/ops and tests/test_backends.py."""
