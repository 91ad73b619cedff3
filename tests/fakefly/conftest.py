import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakefly.testing import FakeFly  # noqa: E402


@pytest.fixture
def fly(tmp_path):
    return FakeFly(tmp_path / "fly")
