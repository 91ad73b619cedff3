"""A stand-in for flyctl, for tests. State lives under $FAKEFLY_HOME.

The executable is ``tests/fakefly/flyctl``; the test-facing API is :mod:`fakefly.state`.
"""

FLYCTL_VERSION = "0.4.87"
