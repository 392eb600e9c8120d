"""What every test shares: structlog's global configuration does not leak from one test to the next.

``mcpgw`` commands run in-process configure structlog (level, renderer); a
later test capturing logs must start from the defaults.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    yield
    structlog.reset_defaults()
