"""The Debian package (issue 11 item 4): scripts/package.sh builds it (CPack, tests off), then
`dpkg -i` installs it into a scratch root (dpkg --root, maintainer scripts run without chroot
and see DPKG_ROOT), the files are checked, the installed `hsdo --version` runs,
`systemd-analyze verify` accepts both units, and `dpkg -P` purges everything again. The host's
own dpkg database and /usr are never touched."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BUILD, ROOT

UNITS = ("hsdo-server.service", "hsdo-client.service")


def run(argv, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            **kwargs)
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    out = tmp_path_factory.mktemp("deb")
    # Package the suite's own build: a second, tests-off build would cost minutes of CI.
    env = dict(os.environ, HSDO_PACKAGE_BUILD_DIR=str(BUILD))
    built = run(["bash", str(ROOT / "scripts" / "package.sh"), str(out)], env=env, timeout=1800,
                cwd=ROOT)
    path = Path(built.stdout.strip().splitlines()[-1])
    assert path.exists() and path.suffix == ".deb", built.stdout
    return path


@pytest.fixture
def scratch_root(tmp_path):
    root = tmp_path / "root"
    admin = root / "var" / "lib" / "dpkg"
    for sub in ("info", "updates", "triggers"):
        (admin / sub).mkdir(parents=True)
    (admin / "status").write_text("")
    (admin / "available").write_text("")
    return root


def dpkg(root, *args):
    # The scratch root has no libc6 or adduser in its database: --force-depends. Maintainer
    # scripts run on the host with DPKG_ROOT set, and do nothing to the host then.
    return run(["dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends",
                "--log=/dev/null", *args], timeout=120)


def test_deb_installs_verifies_and_purges(deb, scratch_root):
    info = run(["dpkg-deb", "--info", str(deb)]).stdout
    assert re.search(r"^ Package: hsdo$", info, re.M), info
    depends = re.search(r"^ Depends: (.*)$", info, re.M).group(1)
    assert "libc6" in depends and "adduser" in depends, depends
    # dlopen()ed, so named by hand: libcurl (either build) and Nettle (SigV4).
    assert "libcurl3-gnutls | libcurl4" in depends and "libnettle8" in depends, depends
    contents = run(["dpkg-deb", "--contents", str(deb)]).stdout
    assert "/build" not in contents and "_test" not in contents, "tests or build paths packaged"

    dpkg(scratch_root, "-i", str(deb))
    root = scratch_root
    binary = root / "usr" / "bin" / "hsdo"
    conf = root / "etc" / "hsdo" / "env.yaml"
    unit_dir = root / "usr" / "lib" / "systemd" / "system"
    man = root / "usr" / "share" / "man" / "man1" / "hsdo.1.gz"
    for path in (binary, conf, man, *(unit_dir / u for u in UNITS),
                 root / "usr" / "share" / "doc" / "hsdo" / "deploying.md",
                 root / "usr" / "share" / "doc" / "hsdo" / "stores.md",  # deploying.md's links
                 root / "usr" / "share" / "doc" / "hsdo" / "haproxy-facts.md",
                 root / "usr" / "share" / "doc" / "hsdo" / "contrib" / "prometheus" / "hsdo-alerts.yml"):
        assert path.exists(), f"{path} not installed"
    assert conf.read_text() == (ROOT / "conf" / "env.yaml").read_text()
    # Made by postinst (owned by hsdo outside a scratch root): `init-table`, the first step
    # after install, writes the SQLite store there before any unit has run.
    state = root / "var" / "lib" / "hsdo"
    assert state.is_dir() and (state.stat().st_mode & 0o777) == 0o750, "no /var/lib/hsdo"
    conffiles = run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
                     "-f=${Conffiles}", "hsdo"]).stdout
    assert "/etc/hsdo/env.yaml" in conffiles, conffiles
    status = run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Status}",
                  "hsdo"]).stdout
    assert status == "install ok installed", status

    version = run([str(binary), "--version"]).stdout.strip()
    # The project's version, and the commit it was built from in a git checkout.
    assert re.fullmatch(r"hsdo \d+\.\d+\.\d+(\+g[0-9a-f]{12,}(\.dirty)?)?", version), version
    page = run(["man", "-l", str(man)], env=dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="0")).stdout
    assert "HAProxy Service Discovery Orchestrator" in page and "/etc/hsdo/env.yaml" in page

    for unit in UNITS:
        text = (unit_dir / unit).read_text()
        for line in ("Restart=always", "StartLimitIntervalSec=0", "User=hsdo", "StateDirectory=hsdo", "ProtectSystem=strict",
                     "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes",
                     "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                     "Environment=HSDO_CONFIG=/etc/hsdo/env.yaml",
                     "ExecStart=/usr/bin/hsdo --config /etc/hsdo/env.yaml"):
            assert line in text, f"{unit}: no {line}"
    assert "SupplementaryGroups=haproxy" in (unit_dir / "hsdo-client.service").read_text()
    verify_units(root, unit_dir)

    # As `systemctl enable` leaves them: a purge removes them (they started the units of a
    # later install at boot).
    wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True)
    for unit in UNITS:
        (wants / unit).symlink_to(f"/usr/lib/systemd/system/{unit}")
    dpkg(scratch_root, "--purge", "hsdo")
    assert not binary.exists() and not conf.exists() and not (unit_dir / UNITS[0]).exists()
    assert not (root / "etc" / "hsdo").exists() and not state.exists()
    assert not any(wants.iterdir()), list(wants.iterdir())


def verify_units(root, unit_dir):
    """systemd-analyze verify on the installed units. It checks ExecStart's binary on the host's
    file system, so the copies it reads point at the scratch root's /usr/bin/hsdo (the only
    change); `man:hsdo(1)` resolves through MANPATH to the scratch root's man page."""
    verify_dir = root.parent / "verify"
    verify_dir.mkdir()
    for unit in UNITS:
        text = (unit_dir / unit).read_text()
        (verify_dir / unit).write_text(text.replace("ExecStart=/usr/bin/hsdo",
                                                    f"ExecStart={root}/usr/bin/hsdo"))
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing (scripts/install-deps.sh installs systemd)"
    env = dict(os.environ, MANPATH=f"{root}/usr/share/man:/usr/share/man", SYSTEMD_LOG_LEVEL="notice")
    result = subprocess.run([analyze, "verify", *(str(verify_dir / u) for u in UNITS)],
                            capture_output=True, text=True, env=env, timeout=120,
                            cwd=verify_dir)
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", (
        f"systemd-analyze verify exited {result.returncode}:\n{result.stdout}\n{result.stderr}")


@pytest.mark.parametrize("existing", ["none", "user without its group", "both"])
def test_postinst_makes_the_user_and_group_the_units_run_as(tmp_path, existing):
    """postinst on a host, its commands replaced by shims that log their arguments (the host's
    users, groups and /var/lib are never touched). The units run as User=hsdo and Group=hsdo,
    and `chown hsdo:hsdo` needs both: a user hsdo that exists without its group (made by hand,
    or by another package) must get the group, or the chown fails and the install with it."""
    shims = tmp_path / "bin"
    shims.mkdir()
    calls = tmp_path / "calls"
    have = {"none": "", "user without its group": "passwd", "both": "passwd group"}[existing]
    (shims / "getent").write_text(
        "#!/bin/sh\n"
        f'echo "getent $*" >> {calls}\n'
        f'for db in {have}; do [ "$db" = "$1" ] && exit 0; done\n'
        "exit 2\n")
    for name in ("addgroup", "adduser", "chown", "install", "systemctl"):
        (shims / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\n')
    for shim in shims.iterdir():
        shim.chmod(0o755)
    env = {"PATH": f"{shims}:/usr/bin:/bin"}
    run(["sh", str(ROOT / "packaging" / "deb" / "postinst"), "configure"], env=env, timeout=30)
    log = calls.read_text().splitlines()
    made = [line.split()[0] for line in log if line.split()[0] in ("addgroup", "adduser")]
    assert made == {"none": ["addgroup", "adduser"], "user without its group": ["addgroup"],
                    "both": []}[existing], log
    if "adduser" in made:
        assert "--ingroup hsdo" in next(line for line in log if line.startswith("adduser")), log
    # The group exists (made above, or before) by the time the directory is given to it.
    chown = log.index("chown hsdo:hsdo /var/lib/hsdo")
    assert all(log.index(line) < chown for line in log if line.split()[0] in made), log
