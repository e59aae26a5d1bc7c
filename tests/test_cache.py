"""A stage's key names the code that computes it: code changes re-run it, comments and docstrings do not."""

import pytest

from pipeline import cache

BASE = '''"""A stage."""

def run(x):
    """Doubles."""
    return 2 * x  # twice
'''


@pytest.mark.parametrize(
    "edited, same",
    [
        (BASE.replace("# twice", "# two times"), True),  # a comment
        (BASE.replace('"""Doubles."""', '"""Twice x."""'), True),  # a docstring
        (BASE.replace('"""A stage."""', '"""A stage.\n\nMore words."""\n\n'), True),  # a module docstring, lines
        (BASE.replace("2 * x", "3 * x"), False),  # the arithmetic
        (BASE.replace("def run(x):", "def run(y):").replace("2 * x", "2 * y"), False),  # a name
        (BASE.replace('"""Doubles."""\n', ""), True),  # a docstring removed
        (BASE + "\nLIMIT = 3\n", False),  # a new constant
    ],
)
def test_only_code_changes_the_key(tmp_path, edited, same):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text(BASE)
    b.write_text(edited)
    assert (cache.source_digest(str(a)) == cache.source_digest(str(b))) is same
