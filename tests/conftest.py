"""Fixtures shared across test files: the PostgreSQL URL that .ci/run exports, one headless Chromium."""
import os

import pytest


@pytest.fixture(scope="module")
def pg_url() -> str:
    """``MLTRADE_PG_URL`` (from scripts/start_postgres.sh); skipped outside CI when unset, a failure under CI."""
    url = os.environ.get("MLTRADE_PG_URL", "")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("MLTRADE_PG_URL is not set under CI: .ci/run must start PostgreSQL "
                        "with scripts/start_postgres.sh and export the URL it prints")
        pytest.skip("MLTRADE_PG_URL not set: run `export MLTRADE_PG_URL=$(bash scripts/start_postgres.sh | tail -n1)`")
    if not url.startswith("postgresql"):
        pytest.fail(f"MLTRADE_PG_URL: expected a postgresql:// URL, got {url!r}")
    return url


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module, driven through the live store's own start-up."""
    from mltrade.live.store import SeleniumStore

    d = SeleniumStore("ig", "http://127.0.0.1:1")._start_browser()
    yield d
    d.quit()
