"""The packaging: a wheel built from this checkout by pip (as `pip install .`
does, with build isolation: today's setuptools) builds without setuptools
warnings, and the installed, non-editable casegate has its migrations and
templates: `casegate init` creates a store with every migration, and the
renderer finds every template of the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.system  # builds a wheel: about 20 s


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", str(REPO), "-w", str(out)],
        capture_output=True, text=True, timeout=600)
    if build.returncode != 0 and "setuptools" in build.stdout + build.stderr and (
            "No matching distribution" in build.stderr or "Could not find" in build.stderr):
        pytest.skip("pip cannot fetch setuptools for an isolated build here")
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (whl,) = out.glob("casegate-*.whl")
    return whl, build.stdout + build.stderr


def test_the_build_prints_no_setuptools_warning(wheel: tuple[Path, str]) -> None:
    _, output = wheel
    for needle in ("would be ignored", "_Warning", "SetuptoolsDeprecationWarning"):
        assert needle not in output, [line for line in output.splitlines() if needle in line][:10]


def test_an_installed_casegate_has_its_migrations_and_templates(wheel: tuple[Path, str],
                                                               tmp_path: Path) -> None:
    whl, _ = wheel
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target),
                    str(whl)], check=True, capture_output=True, timeout=300)
    # The wheel's copy comes first on the path: not this checkout.
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("CASEGATE_STORE", None)
    where = subprocess.run([sys.executable, "-c", "import cli, casestore.store as s; "
                            "print(cli.__file__); print(s.MIGRATIONS)"],
                           env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert all(line.startswith(str(target)) for line in where.stdout.split()), where.stdout
    init = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "--config",
                           str(tmp_path / "c.toml"), "--store", f"sqlite:///{tmp_path / 'c.db'}", "init"],
                          env=env, capture_output=True, text=True, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    migrations = sorted(p.stem for p in (REPO / "casestore" / "migrations").glob("[0-9]*.py"))
    assert f"applied {', '.join(migrations)}" in init.stdout
    templates = sorted(str(p.relative_to(REPO / "smtpd_hook" / "templates"))
                       for p in (REPO / "smtpd_hook" / "templates").rglob("*") if p.is_file())
    listed = subprocess.run([sys.executable, "-c", "from smtpd_hook.render import Renderer; "
                             "print('\\n'.join(sorted(Renderer().env.list_templates())))"],
                            env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    # The built-ins sit under jinja's "builtin/" prefix (overrides have none).
    assert sorted(name.removeprefix("builtin/") for name in listed.stdout.split()) == templates
