"""scripts/background.sh, which scripts/test.sh runs the sanitizer build with beside the tests.

The build ran in a process group of its own (so that the script could end it whole), which
also put it out of reach of whoever ends the script: a CI job killed by SIGKILL of its process
group left the build compiling on (no trap runs then). background.sh now ends its group once
the process that started it is gone.
"""
import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import wait_until

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "background.sh"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_background_job_ends_when_its_owner_is_killed():
    # The owner: a shell that starts the job and waits, in a process group of its own, as a CI
    # job's script is.
    owner = subprocess.Popen(
        ["bash", "-c", f'"{SCRIPT}" $$ sleep 300 & echo "$!"; exec sleep 300'],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    job = int(owner.stdout.readline())
    try:
        wait_until(lambda: group_alive(job), timeout=5, what="the job's process group")
        assert os.getpgid(job) == job != owner.pid
        os.killpg(owner.pid, signal.SIGKILL)  # the owner's group: the job is not in it
        owner.wait(timeout=5)
        started = time.monotonic()
        wait_until(lambda: not group_alive(job), timeout=5,
                   what="the job's process group ended after its owner was killed")
        print(f"job ended {time.monotonic() - started:.1f}s after its owner was killed")
    finally:
        if group_alive(job):
            os.killpg(job, signal.SIGKILL)
        if owner.poll() is None:
            os.killpg(owner.pid, signal.SIGKILL)
            owner.wait(timeout=5)
        owner.stdout.close()


def test_a_background_job_runs_to_its_end_with_its_status():
    done = subprocess.run([str(SCRIPT), str(os.getpid()), "sh", "-c", "sleep 1.5; exit 3"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 3, done.stderr
    usage = subprocess.run([str(SCRIPT), str(os.getpid())], capture_output=True, text=True,
                           timeout=30)
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_a_background_job_runs_at_the_lowest_priority_beside_the_tests():
    # The session background.sh makes is a scheduling group of its own (autogroup, when the
    # kernel has it on): without the group's own nice value, nice 19 within it still gave the
    # sanitizer build half of the cores beside the tests.
    done = subprocess.run([str(SCRIPT), str(os.getpid()), "sh", "-c",
                           "cat /proc/self/autogroup 2>/dev/null; ps -o ni= -p $$"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[-2].strip() == "19", done.stdout
    autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled")
    if autogroup.exists() and autogroup.read_text().strip() == "1":
        assert lines[0].endswith(" nice 19"), done.stdout
