"""The Makefile's entry points keep their promises: a second `make` finds the installation up to date."""
import subprocess

from conftest import ROOT, run


def test_a_second_make_does_not_reinstall():
    run(["make", "export-check"], ROOT)                  # nbdev-export rewrites pyproject.toml, same content
    assert subprocess.run(["make", "-q", "install"], cwd=ROOT, check=False).returncode == 0
