"""The systemd units in systemd/: required directives (everywhere) and `systemd-analyze` checks (where it exists)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"
UNITS = {"trapcls-watch.service": "/etc/trapcls/watch.env", "trapcls-watch@.service": "/etc/trapcls/%i.env"}
INSTALLED_EXE = "/opt/trapcls/venv/bin/trapcls"
# Measured 0.7 (both units) and 1.0 (with jetson.conf) with systemd 252; see systemd/README.md.
MAX_EXPOSURE = 2.0


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as (key, value) lists in file order; systemd allows repeated keys."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"directive outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def last(section: list[tuple[str, str]], key: str) -> str | None:
    found = values(section, key)
    return found[-1] if found else None


@pytest.mark.parametrize("name", UNITS)
def test_unit_has_required_directives(name):
    units = parse_unit((SYSTEMD / name).read_text())
    unit, service = units["Unit"], units["Service"]
    assert units["Install"] == [("WantedBy", "multi-user.target")]
    # Start limits belong in [Unit]; in [Service] systemd ignores them (with a warning only).
    assert last(unit, "StartLimitIntervalSec") and last(unit, "StartLimitBurst")
    assert not values(service, "StartLimitIntervalSec") and not values(service, "StartLimitBurst")

    expected = {
        "Type": "notify", "NotifyAccess": "main", "Restart": "on-failure", "KillMode": "mixed",
        "TimeoutStopSec": "30", "User": "trapcls", "Group": "trapcls", "ProtectSystem": "strict",
        "NoNewPrivileges": "yes", "PrivateTmp": "yes", "ProtectHome": "yes", "DevicePolicy": "closed",
        "CapabilityBoundingSet": "", "AmbientCapabilities": "", "SystemCallArchitectures": "native",
        "PrivateNetwork": "yes", "EnvironmentFile": UNITS[name],
    }
    assert {k: last(service, k) for k in expected} == expected
    assert last(service, "WatchdogSec") and last(service, "RestartSec")
    assert int(last(service, "TimeoutStartSec")) >= 120, "model loading happens before READY=1"
    assert "PYTHONUNBUFFERED=1" in values(service, "Environment")
    assert "video" in last(service, "SupplementaryGroups").split()

    # PrivateDevices=yes would hide /dev/nvidia*; MemoryDenyWriteExecute=yes breaks torch's JIT kernels.
    assert last(service, "PrivateDevices") in (None, "no")
    assert last(service, "MemoryDenyWriteExecute") in (None, "no")
    assert {"char-nvidia-uvm rw", "char-nvidia rw", "char-nvidia-frontend rw"} <= set(values(service, "DeviceAllow"))

    # ReadWritePaths= does not expand $VARS, so the default TRAPCLS_OUT must name the same folder.
    rw = values(service, "ReadWritePaths")
    assert rw and not any("$" in p for p in rw)
    env = dict(v.split("=", 1) for v in values(service, "Environment"))
    assert env["TRAPCLS_OUT"] in rw

    exec_start = last(service, "ExecStart").split()
    assert exec_start[:3] == [INSTALLED_EXE, "watch", "${TRAPCLS_INBOX}"]
    assert exec_start[3:] == ["--bundle", "${TRAPCLS_BUNDLE}", "--out", "${TRAPCLS_OUT}", "$TRAPCLS_ARGS"]


def test_jetson_dropin_lifts_device_cgroup():
    service = parse_unit((SYSTEMD / "jetson.conf").read_text())["Service"]
    assert values(service, "DeviceAllow") == [""]
    assert last(service, "DevicePolicy") == "auto"
    assert last(service, "ProtectClock") == "no", "ProtectClock implies DeviceAllow=char-rtc (systemd#18142)"


def test_env_example_sets_the_bundle():
    lines = [ln for ln in (SYSTEMD / "watch.env.example").read_text().splitlines() if ln and not ln.startswith("#")]
    assert any(ln.startswith("TRAPCLS_BUNDLE=/") for ln in lines)
    assert all(re.fullmatch(r"TRAPCLS_[A-Z]+=.*", ln) for ln in lines)


def _analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not on PATH (install systemd to run this check)")
    return exe


@pytest.fixture()
def unit_dir(tmp_path) -> Path:
    """The units with ExecStart pointing at this venv's trapcls (verify insists the executable exists)."""
    trapcls = Path(sys.executable).parent / "trapcls"
    if not trapcls.exists():
        pytest.skip(f"{trapcls} is missing: install the package into this venv (pip install -e .)")
    for name in UNITS:
        (tmp_path / name).write_text((SYSTEMD / name).read_text().replace(INSTALLED_EXE, str(trapcls)))
    return tmp_path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=False, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("dropin", [False, True], ids=["plain", "jetson"])
@pytest.mark.parametrize("unit", ["trapcls-watch.service", "trapcls-watch@test.service"])
def test_systemd_analyze_verify(unit_dir, unit, dropin):
    exe = _analyze()
    if dropin:
        d = unit_dir / (unit.replace("@test", "@") + ".d")
        d.mkdir()
        shutil.copy(SYSTEMD / "jetson.conf", d)
    # Unknown keys and bad values are only warnings (exit 0), so the output must be clean too.
    # verify also loads units the host provides (multi-user.target); only lines about ours count.
    # It does not check that User=/Group=/SupplementaryGroups= exist on this machine.
    done = _run([exe, "verify", "--man=no", f"./{unit}"], unit_dir)
    ours = [ln for ln in (done.stdout + done.stderr).splitlines() if "trapcls" in ln]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr


@pytest.mark.parametrize("unit", ["trapcls-watch.service", "trapcls-watch@test.service"])
def test_systemd_analyze_security_exposure(unit_dir, unit):
    exe = _analyze()
    done = _run([exe, "security", "--offline=true", "--no-pager", f"./{unit}"], unit_dir)
    if done.returncode != 0 and "offline" in done.stderr:
        pytest.skip(f"this systemd-analyze has no --offline (systemd >= 250 needed): {done.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, done.stdout
