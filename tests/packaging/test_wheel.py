"""Packaging (issue 11 item 18): the wheel carries the recipes and the licence; no extra swaps torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_license_and_citation_files():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "Apache-2.0" and meta["license-files"] == ["LICENSE"]
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "Apache-2.0"
    assert {"ConMH" in r["title"] or "Masked" in r["title"] for r in cff["references"]} == {True, False}
    assert cff["version"] == meta["version"]


def test_no_extra_pulls_torch_itself_and_the_timm_route_pins_torch():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name, reqs in extras.items():
        assert not [r for r in reqs if r.split(">")[0].split("=")[0].strip() in ("torch", "torchvision")], name
    assert "timm" not in " ".join(extras["all"])  # timm needs a torchvision matched to the installed torch
    readme = (ROOT / "README.md").read_text()
    assert 'pip install "bitseek[timm]" -c' in readme and "torch==" in readme


def test_repository_configs_are_the_packaged_recipes():
    assert (ROOT / "configs").resolve() == (ROOT / "src" / "bitseek" / "configs").resolve()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the tracked files")
def test_the_wheel_ships_every_recipe_and_the_licence(tmp_path):
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True)
    src = tmp_path / "src-copy"
    for rel in tracked.stdout.splitlines():
        if rel.startswith(("src/", "LICENSE", "README.md", "pyproject.toml")):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    if r.returncode != 0 and "No module named" in r.stderr:
        pytest.skip(f"no build backend here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp_path / "dist").glob("bitseek-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = {p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src/bitseek/configs").rglob("*.yaml")}
    assert recipes and recipes <= names
    assert "bitseek/configs/conmh/fcvid-64.yaml" in names and "bitseek/configs/conmh/_fcvid.yaml" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_plotting_and_the_demo_console_are_optional():
    """matplotlib and rich are extras: the core imports without them and the plot call says what to install."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in deps if d.startswith(("matplotlib", "rich"))]
    code = ("import sys; sys.modules['matplotlib'] = None; sys.modules['rich'] = None\n"
            "import bitseek.eval, bitseek.pipeline, bitseek.cli.main, bitseek.index\n"
            "from bitseek.errors import BitseekError\n"
            "from bitseek.eval.report import new_figure\n"
            "try:\n    new_figure()\nexcept BitseekError as e:\n    assert 'bitseek[plots]' in str(e), e\n"
            "else:\n    raise SystemExit('no error')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
