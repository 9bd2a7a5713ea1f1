"""Packaging: `make install` builds a working venv and installs the unit, and systemd
accepts the unit (`systemd-analyze verify`, with ExecStart pointing at a real binary)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "voicemail" / "packaging" / "voicemail.service"

pytestmark = pytest.mark.timeout(300)


def make_install(destdir: Path) -> subprocess.CompletedProcess[str]:
    """`make install DESTDIR=destdir` from this checkout."""
    return subprocess.run(
        ["make", "-C", str(REPO), "install", f"DESTDIR={destdir}"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture(scope="module")
def destdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`make install DESTDIR=...` once for the module (a venv and a pip install)."""
    root = tmp_path_factory.mktemp("destdir")
    made = make_install(root)
    assert made.returncode == 0, made.stdout + made.stderr
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_make_install_gives_a_venv_whose_voicemail_runs(destdir: Path) -> None:
    binary = destdir / "opt" / "voicemail" / "venv" / "bin" / "voicemail"
    helped = subprocess.run(
        [str(binary), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert helped.returncode == 0, helped.stderr
    assert "ARA Voicemail server" in helped.stdout
    unit = destdir / "etc" / "systemd" / "system" / "voicemail.service"
    assert unit.read_text() == UNIT.read_text()
    installed = sorted(p.name for p in (destdir / "etc" / "voicemail").iterdir())
    assert installed == [
        "asterisk.conf",
        "extconfig.conf",
        "extensions.conf",
        "res_odbc.conf",
        "sip.conf",
        "voicemail.conf",
    ]


def test_make_install_leaves_an_existing_etc_voicemail_alone(tmp_path: Path) -> None:
    mine = tmp_path / "etc" / "voicemail"
    mine.mkdir(parents=True)
    (mine / "voicemail.conf").write_text("; the operator's own\n")
    made = make_install(tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "etc/voicemail exists: left as it is" in made.stdout
    assert sorted(p.name for p in mine.iterdir()) == ["voicemail.conf"]
    assert (mine / "voicemail.conf").read_text() == "; the operator's own\n"


def test_the_unit_passes_systemd_analyze_verify(destdir: Path, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # As installed, ExecStart names /opt/voicemail/...; point a copy at the DESTDIR venv so
    # systemd checks a binary that exists.
    installed = destdir / "etc" / "systemd" / "system" / "voicemail.service"
    copy = tmp_path / "voicemail.service"
    copy.write_text(installed.read_text().replace("/opt/voicemail/", f"{destdir}/opt/voicemail/"))
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert "voicemail.service" not in verified.stderr, verified.stderr  # no warnings either
    # The check is real: the unit as shipped, on a host without the venv, is refused.
    missing = tmp_path / "missing" / "voicemail.service"
    missing.parent.mkdir()
    missing.write_text(installed.read_text().replace("/opt/voicemail/", "/nonexistent/vm/"))
    refused = subprocess.run(
        ["systemd-analyze", "verify", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0 and "is not executable" in refused.stderr
