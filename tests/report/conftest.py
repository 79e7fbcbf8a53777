"""A headless chromium for the browser tests, or a skip that says how to get one."""

import pytest

from tests.report.chromium import Browser, find_chromium


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        pytest.skip("no chromium found: apt-get install -y chromium (or set ONNXCAM_CHROMIUM to a Chrome binary)")
    instance = Browser(executable)
    yield instance
    instance.close()
