"""The shipped profiles: the cluster profile installs where Snakemake's --profile lookup finds it, filled in."""

import subprocess
import sys

import pytest
import yaml

from clgrid import profiles
from tests.conftest import REPO

SLURM = REPO / "profiles" / "slurm" / profiles.PROFILE_FILE


def test_workflow_profile_leaves_site_keys_alone():
    # Snakemake merges profiles key by key, the workflow profile winning: these keys would discard the site's.
    workflow = yaml.safe_load((REPO / "profiles" / "default" / profiles.PROFILE_FILE).read_text())
    assert not {"default-resources", "set-resources", "executor", "jobs", "groups"} & set(workflow)
    assert workflow["set-threads"]["train_task"] == 1


def test_cluster_profile_carries_the_site_settings():
    cluster = yaml.safe_load(SLURM.read_text())
    assert cluster["executor"] == "slurm"
    for key in ("jobs", "latency-wait", "retries", "rerun-incomplete", "slurm-requeue", "groups"):
        assert key in cluster, key
    assert cluster["groups"]["train_task"] == cluster["groups"]["analyze_run"] == "run"
    assert cluster["default-resources"]["slurm_account"] == "<ACCOUNT>"


def test_render_fills_or_drops_placeholders():
    filled = yaml.safe_load(profiles.render(SLURM.read_text(), "lab42", "gpu", {"jobs": "7"}))
    assert filled["default-resources"]["slurm_account"] == "lab42"
    assert filled["default-resources"]["slurm_partition"] == "gpu"
    assert filled["jobs"] == 7
    dropped = yaml.safe_load(profiles.render(SLURM.read_text(), None, None, {"slurm-init-seconds-before-status-checks": "1"}))
    assert "slurm_account" not in dropped["default-resources"]
    assert "slurm_partition" not in dropped["default-resources"]
    assert dropped["slurm-init-seconds-before-status-checks"] == 1
    assert dropped["executor"] == "slurm"


def test_install_goes_where_snakemake_looks(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    written = profiles.install_profile("slurm", account="ci", partition="debug", repo=REPO)
    assert written == tmp_path / "xdg" / "snakemake" / "slurm" / profiles.PROFILE_FILE
    # Snakemake's own lookup of --profile slurm, in a fresh process (it caches its config dirs).
    found = subprocess.run(
        [sys.executable, "-c", "from snakemake.cli import get_profile_dir; print(get_profile_dir('slurm')[0])"],
        capture_output=True, text=True, check=True, cwd=tmp_path, env={"XDG_CONFIG_HOME": str(tmp_path / "xdg"),
                                                                       "PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    assert found == str(written.parent)
    assert "slurm_account: \"ci\"" in written.read_text()


def test_install_keeps_a_different_existing_profile(tmp_path):
    profiles.install_profile("slurm", account="ci", dest=tmp_path, repo=REPO)
    profiles.install_profile("slurm", account="ci", dest=tmp_path, repo=REPO)  # same text: fine
    with pytest.raises(profiles.ProfileError, match="pass --force"):
        profiles.install_profile("slurm", account="other", dest=tmp_path, repo=REPO)
    assert "other" in profiles.install_profile("slurm", account="other", dest=tmp_path, force=True,
                                               repo=REPO).read_text()


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "pbs"}, "no shipped profile 'pbs'; available: default, local, slurm"),
    ({"account": "my account"}, "--account 'my account'"),
    ({"partition": "gpu;rm"}, "--partition 'gpu;rm'"),
])
def test_bad_install_requests_are_named(tmp_path, kwargs, message):
    with pytest.raises(profiles.ProfileError, match=message.replace("(", r"\(")):
        profiles.install_profile(dest=tmp_path, repo=REPO, **kwargs)


def test_cli_reports_what_it_wrote(tmp_path):
    done = subprocess.run([sys.executable, "-m", "clgrid.cli", "install-profile", "--partition", "debug",
                           "--dest", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert f"installed profile 'slurm' as {tmp_path / profiles.PROFILE_FILE}" in done.stdout
