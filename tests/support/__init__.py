"""Helpers shared by the test suite: stand-ins for the outside world (e.g. ``nacos_double``)."""
