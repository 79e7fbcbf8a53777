"""The README's supported-ops table is the rule table (regenerate: python scripts/update_readme.py)."""

import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import update_readme  # noqa: E402


def test_ops_table_is_current():
    text = update_readme.README.read_text(encoding="utf-8")
    assert update_readme.with_ops_table(text) == text, "README ops table is stale: run python scripts/update_readme.py"
