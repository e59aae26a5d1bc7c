"""The docs a newcomer reads agree with the repository.

README.md: at most 150 lines; every relative link and repository path it names exists; every `make`
target it names is in the Makefile; every module it runs with `-m` exists; every stage of
`python -m pipeline --help` is a row of its stage table. docs/decisions.md: exactly what
scripts/decisions.py renders from _data/decisions.yml, and the check fails when they differ.
"""

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SCRIPT = ROOT / "scripts/decisions.py"
LOG = ROOT / "_data/decisions.yml"
RENDERED = ROOT / "docs/decisions.md"

# Paths a README may name that a fresh clone does not hold: git-ignored data, caches and installs,
# and the shared data beside the checkout.
NOT_IN_A_CLONE = (
    "data",
    "data_extra",
    "data_storylines",
    "data_long",
    "cache",
    ".venv",
    "node_modules",
    "assets/vendor",
    "_site",
)
COMMANDS = ("predict", "serve", "fetch")  # `python -m pipeline` commands that are not stages


def decisions():
    spec = importlib.util.spec_from_file_location("decisions_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def readme() -> str:
    return README.read_text(encoding="utf-8")


def split_code(text: str) -> tuple[str, str]:
    """(the prose, the fenced code blocks' contents) of a Markdown text."""
    prose, code, inside = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
            continue
        (code if inside else prose).append(line)
    return "\n".join(prose), "\n".join(code)


# --- the decision log ---------------------------------------------------------------------------


def test_decisions_md_is_the_rendering_of_the_yml():
    script = decisions()
    assert RENDERED.read_text(encoding="utf-8") == script.render(script.load(LOG)), (
        "docs/decisions.md is stale: run `python scripts/decisions.py`"
    )


def test_the_check_passes_as_committed_and_fails_on_a_changed_log(tmp_path):
    assert run_script("--check").returncode == 0
    entries = yaml.safe_load(LOG.read_text(encoding="utf-8"))
    read = [e for e in entries if e["test_read"]]  # changed_after is only said of an entry that read the test
    read[-1]["changed_after"] = "yes: a rule changed after this reading"
    changed = tmp_path / "decisions.yml"
    changed.write_text(yaml.safe_dump(entries, allow_unicode=True, sort_keys=False), encoding="utf-8")
    failed = run_script("--check", "--data", changed)
    assert failed.returncode == 1 and "decisions.py" in failed.stderr
    out = tmp_path / "decisions.md"  # and writing it makes the check pass again
    assert run_script("--data", changed, "--out", out).returncode == 0
    assert run_script("--check", "--data", changed, "--out", out).returncode == 0
    assert "yes: a rule changed after this reading" in out.read_text(encoding="utf-8")


def test_the_log_follows_its_schema():
    entries = decisions().load(LOG)
    readings = [e for e in entries if e["test_read"] is True]
    assert readings, "the log lists no reading of the test split"
    # what the site's provenance and escaping tests do with every _data file: JSON-able values only
    for e in entries:
        assert all(v is None or isinstance(v, str | bool | list) for v in e.values()), e["id"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"date": "5 Dec 2026"}, "date"),
        ({"commit": "HEAD"}, "commit"),
        ({"test_read": False, "test_result": "read anyway"}, "must be null"),
        ({"test_read": True, "changed_after": None}, "whether a rule changed"),
        ({"surprise": 1}, "unknown fields"),
    ],
)
def test_a_malformed_entry_is_refused(change, message):
    script = decisions()
    entries = yaml.safe_load(LOG.read_text(encoding="utf-8"))
    entries[0].update(change)
    with pytest.raises(ValueError, match=message):
        script.validate(entries)


def test_an_unquoted_date_is_refused(tmp_path):
    """YAML reads 2026-12-05 as a date, which the site's tests cannot serialise: the log quotes dates."""
    log = tmp_path / "decisions.yml"
    log.write_text(LOG.read_text(encoding="utf-8").replace('date: "2026-11-25"', "date: 2026-11-25", 1))
    result = run_script("--check", "--data", log)
    assert result.returncode == 2 and "date" in result.stderr


def test_every_commit_the_log_names_exists():
    shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], capture_output=True, text=True, cwd=ROOT)
    if shallow.returncode != 0 or shallow.stdout.strip() != "false":
        pytest.skip("no full git history here (a shallow or archive checkout)")
    for e in decisions().load(LOG):
        if e["commit"]:
            found = subprocess.run(["git", "cat-file", "-e", f"{e['commit']}^{{commit}}"], cwd=ROOT)
            assert found.returncode == 0, f"{e['id']}: no commit {e['commit']}"


# --- README.md ----------------------------------------------------------------------------------


def test_readme_is_at_most_150_lines():
    assert len(readme().splitlines()) <= 150


def path_like(word: str) -> bool:
    """A relative path inside the repository, as a README writes one: not a URL, an option, a placeholder
    (<id>, DIR, ...), an absolute path or one outside the checkout."""
    return "/" in word and not re.search(r"[\s<>*=:{}$]|\.\.\.|^[-/]|^\.\./", word)


def repository_paths(text: str) -> set[str]:
    """The relative link targets and the paths of a Markdown text: every path-like inline code span, and
    the words of its code blocks that start with a top-level name of the repository (a code block also
    holds words like application/json)."""
    prose, code = split_code(text)
    paths = {t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", prose) if not re.match(r"[a-z]+:|#", t)}
    paths |= {w for w in re.findall(r"`([^`]+)`", prose) if path_like(w)}
    top = {p.name for p in ROOT.iterdir()} | {d.split("/")[0] for d in NOT_IN_A_CLONE}
    paths |= {w for w in (w.strip("'\"(),;") for w in code.split()) if path_like(w) and w.split("/")[0] in top}
    return {p.rstrip("/") for p in paths} - {""}


def test_every_path_the_readme_names_exists():
    names = repository_paths(readme())
    assert "pipeline/runtime" in names and "docs/decisions.md" in names  # the parser sees the map
    missing = [
        p
        for p in sorted(names)
        if not any(p == d or p.startswith(d + "/") for d in NOT_IN_A_CLONE) and not (ROOT / p).exists()
    ]
    assert missing == [], f"README.md names paths that do not exist: {missing}"


def test_every_module_the_readme_runs_exists():
    modules = set(re.findall(r"-m ((?:pipeline|bench)(?:\.\w+)*)", readme()))
    assert {"pipeline", "bench.predict"} <= modules
    for module in modules:
        path = ROOT / module.replace(".", "/")
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), module


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.M))


def test_every_make_target_the_readme_names_exists():
    prose, code = split_code(readme())
    named = set(re.findall(r"(?<![\w-])make ([a-z][\w-]*)", " ".join(re.findall(r"`([^`]+)`", prose)) + "\n" + code))
    assert {"serve", "test", "pipeline", "bench"} <= named
    assert named <= makefile_targets(), f"not in the Makefile: {sorted(named - makefile_targets())}"


def pipeline_stages() -> list[str]:
    """The stages `python -m pipeline --help` lists; parsed from pipeline/__main__.py if it cannot run."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    choices = re.search(r"\{([\w,-]+)\}", result.stdout) if result.returncode == 0 else None
    if choices:
        return [s for s in choices.group(1).split(",") if s not in COMMANDS + ("all",)]
    tree = ast.parse((ROOT / "pipeline/__main__.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "STAGES" for t in node.targets):
            return [k.value for k in node.value.keys if k.value != "all"]
    raise AssertionError("no STAGES in pipeline/__main__.py")


def stage_table(text: str) -> list[str]:
    """The first column of the README's table whose header starts with `stage`."""
    rows, inside = [], False
    for line in text.splitlines():
        if re.match(r"\|\s*stage\s*\|", line):
            inside = True
            continue
        if inside:
            if not line.startswith("|"):
                break
            cell = line.split("|")[1].strip().strip("`")
            if set(cell) - set("-: "):
                rows.append(cell)
    return rows


def test_the_stage_table_lists_every_stage():
    stages, table = pipeline_stages(), stage_table(readme())
    assert len(stages) >= 10
    assert [s for s in stages if s not in table] == [], "stages missing from README.md's stage table"
    assert [s for s in table if s not in stages] == [], "README.md's stage table lists what is not a stage"
    for command in COMMANDS:
        assert f"python -m pipeline {command}" in readme(), f"README.md does not show how to run {command}"
