"""A private single-node SLURM for tests: munged, slurmctld and slurmd from the distribution's packages.

`running_cluster()` starts them as root in a temporary folder with their own slurm.conf, munge key and
socket, and free ports, so a system-wide SLURM or munge (if any) is neither used nor disturbed; it yields
a `Cluster` that submits and waits for jobs, and stops everything it started however the test ends.
Where it cannot run (not root, the packages missing, a daemon that does not come up) it skips the test
and says why, with the daemon's log.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "sinfo", "squeue", "scontrol", "scancel")
# Where Debian puts the daemons; root's PATH has them, a test runner's may not.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "DEADLINE",
            "BOOT_FAIL"}

SLURM_CONF = """\
# A one-node cluster for trapcls's tests (tests/slurm_cluster.py); every path is private to this run.
ClusterName=trapcls-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
# munge with this run's own key and socket, not the system's
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket.2
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
PlugStackConfig={root}/plugstack.conf
MailProg=/bin/true
# No cgroups, accounting or MPI: nothing a container or a CI box may lack
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# A job whose afterok dependency failed is cancelled rather than left pending for ever
# (read here, not from SchedulerParameters, where older guides put it and 22.05 ignores it without a word)
DependencyParameters=kill_invalid_depend
# Look at pending jobs every second (default 60): the next task or a dependent job starts without a wait
SchedulerParameters=sched_interval=1
ReturnToService=2
# Finished jobs stay visible to scontrol for the whole test
MinJobAge=3600
{node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Job:
    """One job, or one task of an array, as scontrol shows it."""

    id: str
    name: str
    state: str
    reason: str
    exit_code: str
    log: Path | None

    @property
    def finished(self) -> bool:
        """Ended, or never to start: a job pending on a dependency that failed (if not cancelled for it)."""
        return self.state in FINISHED or self.reason == "DependencyNeverSatisfied"

    def describe(self) -> str:
        text = self.log.read_text(errors="replace")[-4000:] if self.log and self.log.is_file() else "(no log)"
        return (f"job {self.id} ({self.name}): {self.state} ({self.reason}), exit {self.exit_code}; "
                f"log {self.log}:\n{text}")


@dataclass
class Cluster:
    """A running private SLURM: its folder, and the environment its client commands need."""

    root: Path
    env: dict[str, str]
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
        """A SLURM client command (or any command) against this cluster; its stdout. Fails the test on an error."""
        proc = subprocess.run(list(args), capture_output=True, text=True, env=env or self.env, timeout=timeout)
        assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        return proc.stdout

    def jobs(self, job_id: str) -> list[Job]:
        """A job (every task, for an array job) from `scontrol show job -o`."""
        jobs = []
        for line in self.run("scontrol", "show", "job", "-o", job_id).splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            task = fields.get("ArrayTaskId")
            jobs.append(Job(id=f"{fields['ArrayJobId']}_{task}" if task else fields["JobId"], name=fields["JobName"],
                            state=fields["JobState"], reason=fields.get("Reason", ""), exit_code=fields["ExitCode"],
                            log=Path(fields["StdOut"]) if fields.get("StdOut") else None))
        return jobs

    def wait(self, job_ids: list[str], timeout: float) -> list[Job]:
        """Wait until every task of these jobs has finished; fail the test, with every job's log, unless all
        completed with exit status 0."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = [job for job_id in job_ids for job in self.jobs(job_id)]
            if all(job.finished for job in jobs):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"SLURM jobs not finished after {timeout} s:\n" + "\n".join(j.describe() for j in jobs)
                            + f"\nslurmctld log:\n{log_tail(self.root / 'slurmctld.log')}")
            time.sleep(0.5)
        failed = [job for job in jobs if job.state != "COMPLETED" or job.exit_code != "0:0"]
        assert not failed, (f"SLURM jobs failed ({', '.join(f'{j.id} {j.state}' for j in jobs)}):\n"
                            + "\n".join(job.describe() for job in failed))
        return jobs


@contextmanager
def running_cluster():
    """Start a private munged + slurmctld + slurmd, wait until the node is idle, yield the Cluster; stop them all."""
    missing_why = cannot_run()
    if missing_why:
        pytest.skip(missing_why)
    root = Path(tempfile.mkdtemp(prefix="trapcls-slurm-"))  # short: a Unix socket path has a 108-byte limit
    cluster = Cluster(root=root, env=client_env(root))
    try:
        write_config(root)
        start(cluster, "munged", [which("munged"), "--foreground", "--force", f"--socket={root}/munge/munge.socket.2",
                                  f"--key-file={root}/munge/munge.key", f"--log-file={root}/munge/munged.log",
                                  f"--pid-file={root}/munge/munged.pid", f"--seed-file={root}/munge/munged.seed"],
              ready=lambda: (root / "munge" / "munge.socket.2").exists())
        start(cluster, "slurmctld", [which("slurmctld"), "-D"], ready=lambda: ping(cluster))
        start(cluster, "slurmd", [which("slurmd"), "-D"], ready=lambda: node_state(cluster) == "idle")
        yield cluster
    finally:
        stop(cluster)
        shutil.rmtree(root, ignore_errors=True)


def cannot_run() -> str | None:
    """Why a private SLURM cannot start here, or None."""
    if os.geteuid() != 0:
        return "a private SLURM needs root (slurmd starts each job as its submitting user); run the tests as root"
    missing = [name for name in DAEMONS + CLIENTS if which(name) is None]
    if missing:
        return (f"SLURM is not installed here ({', '.join(missing)} not found): apt-get install slurm-wlm munge "
                "(.ci/run does so as root)")
    return None


def which(name: str) -> str | None:
    return shutil.which(name, path=SEARCH_PATH)


def client_env(root: Path) -> dict[str, str]:
    """This environment pointed at the private cluster; any SLURM settings of a surrounding job are dropped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SQUEUE_", "SINFO_"))}
    env.update(SLURM_CONF=str(root / "slurm.conf"), PATH=SEARCH_PATH)
    return env


def write_config(root: Path) -> None:
    """slurm.conf for this machine (slurmd -C says its CPUs and memory), a munge key, and the state folders."""
    root.chmod(0o755)  # munged wants its socket's folders open to all (the key itself stays root's alone)
    for sub in ("munge", "state", "spool"):
        (root / sub).mkdir(mode=0o755)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    (root / "plugstack.conf").write_text("")  # no system SPANK plugins
    hardware = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, timeout=30,
                              env=client_env(root))
    node = next((line for line in hardware.stdout.splitlines() if line.startswith("NodeName=")), None)
    if node is None:
        pytest.skip(f"`slurmd -C` did not describe this machine:\n{hardware.stdout}{hardware.stderr}")
    host = node.split()[0].removeprefix("NodeName=")
    ctld_port, slurmd_port = free_ports(2)
    (root / "slurm.conf").write_text(SLURM_CONF.format(root=root, host=host, node=node, ctld_port=ctld_port,
                                                      slurmd_port=slurmd_port))


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (the kernel picks them), so a system slurmctld's 6817 is never touched."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start(cluster: Cluster, name: str, command: list[str], ready, timeout: float = 60) -> None:
    """Start one daemon in the foreground (its output into ROOT/NAME.out) and wait until `ready()`; skip the test,
    with its log, when it exits or does not get ready."""
    with open(cluster.root / f"{name}.out", "wb") as out:  # the daemon keeps its own copy of the descriptor
        cluster.daemons[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=cluster.env,
                                                 start_new_session=True, preexec_fn=die_with_parent)
    deadline = time.monotonic() + timeout
    while not ready():
        proc = cluster.daemons[name]
        if proc.poll() is not None or time.monotonic() > deadline:
            why = f"exited with status {proc.returncode}" if proc.poll() is not None else f"not ready in {timeout} s"
            others = sorted(p for p in cluster.root.rglob("*.out") if p.stem != name)
            logs = "\n".join(f"--- {p.name}:\n{log_tail(p)}" for p in [cluster.root / f"{name}.out", *others])
            pytest.skip(f"the private SLURM could not start: {name} {why}\n{logs}")
        time.sleep(0.2)


def die_with_parent() -> None:
    """In a daemon, before exec: the kernel sends it SIGTERM when the test process dies, even killed outright
    (a CI timeout), where no `finally` runs, so no daemon outlives the tests."""
    import ctypes

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def ping(cluster: Cluster) -> bool:
    """slurmctld answers ("Slurmctld(primary) at HOST is UP")."""
    return "is UP" in subprocess.run(["scontrol", "ping"], capture_output=True, text=True, env=cluster.env,
                                     timeout=30).stdout


def node_state(cluster: Cluster) -> str:
    """The node's state as sinfo shows it: idle once slurmd has registered and can take jobs."""
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=cluster.env, timeout=30)
    return proc.stdout.strip()


def stop(cluster: Cluster) -> None:
    """Cancel this cluster's jobs, then stop slurmd, slurmctld and munged (SIGTERM, then SIGKILL after 20 s)."""
    if "slurmctld" in cluster.daemons and cluster.daemons["slurmctld"].poll() is None:
        subprocess.run(["scancel", "--full", "--user=root"], capture_output=True, env=cluster.env, timeout=30)
        deadline = time.monotonic() + 30  # let slurmd end the jobs' processes, which it alone knows
        while time.monotonic() < deadline and subprocess.run(
                ["squeue", "-h", "-t", "RUNNING,COMPLETING"], capture_output=True, text=True, env=cluster.env,
                timeout=30).stdout.strip():
            time.sleep(0.5)
    for name in reversed(list(cluster.daemons)):
        proc = cluster.daemons[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def log_tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else f"({path} does not exist)"
