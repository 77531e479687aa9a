"""Run commands inside a throw-away VM booting a stock distribution kernel.

Machines whose own kernel lacks ``ip_vs`` (or ``bonding``, ``ipip``) still
test directord against real IPVS: :func:`run_in_vm` boots Debian's stock
kernel under QEMU with virtme-ng (``vng``), which shows the guest this
machine's root file system read-only (with throw-away overlays on /etc, /tmp,
/var, /usr...), runs one command and powers off. The same Python
interpreter, site-packages and checkout are visible at the same paths.

Facts this module relies on (virtme-ng 1.42, QEMU TCG):

* ``vng`` exits 255 whatever the guest command returned, and the guest's
  stdout reaches the host only with ``--verbose``, mixed with kernel log
  lines. So the guest script writes the command's stdout/stderr and its exit
  status into the ``--rwdir`` folder (write-through), and the host reads them
  back. A missing status file means the guest run failed (crash, timeout,
  never started).
* Nested KVM hangs the guest here: always ``--disable-kvm`` (TCG). A boot
  takes about 10 s; Python runs 10-25x slower than on the host, starting a
  process about 100x slower. Boot once per test session, not per test.
* The kernel's modules come with it: virtme-ng links
  ``<root>/lib/modules/<version>`` next to the ``vmlinuz`` it is given.
* The VM has no network device (``-net none``): nothing it sends leaves it.

Command line: ``python -m director.lab.vm [--timeout S] [--out DIR] -- CMD ...``
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

#: apt packages the runner needs on the host (qemu, busybox for virtme's
#: initramfs, kmod for depmod/modprobe, the tools kernel tests use).
APT_PACKAGES = ("qemu-system-x86", "busybox-static", "kmod", "ipvsadm", "tcpdump", "iproute2")

#: Modules loaded in the guest before the command (missing ones are tolerated).
#: Schedulers: every net/netfilter/ipvs/ip_vs_<name>.c of the stock kernel.
GUEST_MODULES = (
    "ip_vs",
    *(
        f"ip_vs_{s}"
        for s in ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos")
    ),
    "ipip",
    "bonding",
    "nlmon",
    "veth",
    "bridge",
)

DEFAULT_CACHE_DIR = Path("~/.cache/directord")
KERNEL_META_PACKAGE = "linux-image-amd64"

#: run_in_vm's return value when the guest ran out of time (as timeout(1)).
STATUS_TIMEOUT = 124
#: run_in_vm's return value when the guest never reported a status.
STATUS_NO_RESULT = 125

REPO_ROOT = Path(__file__).resolve().parents[2]


def _log(msg: str) -> None:
    print(f"[vm] {msg}", file=sys.stderr, flush=True)


# --- prerequisites -----------------------------------------------------------------------


def _run(argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), text=True, **kw)


def missing_apt_packages(packages: Sequence[str] = APT_PACKAGES) -> list[str]:
    """The packages of ``packages`` that dpkg does not report as installed."""
    out = _run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\\n", *packages],
        capture_output=True,
    ).stdout
    installed = {line.split()[0] for line in out.splitlines() if len(line.split()) > 1 and line.split()[1] == "ii"}
    return [p for p in packages if p not in installed]


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise PermissionError(f"{what} needs root (run as root or install it yourself)")


def ensure_apt_packages(packages: Sequence[str] = APT_PACKAGES) -> None:
    """Install the missing ones with apt-get (``apt-get update`` only if something is missing).

    Raises:
        PermissionError: something is missing and we are not root.
        subprocess.CalledProcessError: apt-get failed.
    """
    missing = missing_apt_packages(packages)
    if not missing:
        return
    _require_root(f"installing {' '.join(missing)}")
    _log(f"installing apt packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-qq"], check=True, env=env, stdout=sys.stderr)
    _run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env, stdout=sys.stderr
    )


def find_vng() -> str | None:
    """Path of ``vng``: next to this interpreter first (its venv/pyenv), then on PATH."""
    local = Path(sys.executable).parent / "vng"
    if local.exists():
        return str(local)
    return shutil.which("vng")


def ensure_vng() -> str:
    """Path of ``vng``, installing virtme-ng with this interpreter's pip if absent.

    Raises:
        subprocess.CalledProcessError: pip failed.
        FileNotFoundError: still no ``vng`` after installing.
    """
    vng = find_vng()
    if vng:
        return vng
    _log("installing virtme-ng with pip")
    _run([sys.executable, "-m", "pip", "install", "-q", "virtme-ng"], check=True, stdout=sys.stderr)
    vng = find_vng()
    if not vng:
        raise FileNotFoundError("vng not found after 'pip install virtme-ng'")
    return vng


#: Python packages the guest's lab needs, as ``{import name: pip requirement}`` (the ``lab``
#: extra of pyproject.toml). The guest sees this interpreter's site-packages read-only and has
#: no network, so they are installed on the host before the boot.
GUEST_PYTHON_PACKAGES = {"scapy": "scapy>=2.5"}


def missing_python_packages(packages: Mapping[str, str] = GUEST_PYTHON_PACKAGES) -> list[str]:
    """The pip requirements of ``packages`` whose module this interpreter cannot find (nothing imported)."""
    import importlib.util

    return [req for name, req in packages.items() if importlib.util.find_spec(name) is None]


def ensure_python_packages(packages: Mapping[str, str] = GUEST_PYTHON_PACKAGES) -> None:
    """Install the missing ones of ``packages`` with this interpreter's pip.

    Raises:
        subprocess.CalledProcessError: pip failed.
    """
    missing = missing_python_packages(packages)
    if not missing:
        return
    _log(f"installing with pip: {' '.join(missing)}")
    _run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True, stdout=sys.stderr)


def parse_kernel_package(apt_cache_depends_output: str) -> str | None:
    """The versioned image package in ``apt-cache depends linux-image-amd64`` output.

    ``"  Depends: linux-image-6.1.0-56-amd64"`` -> ``"linux-image-6.1.0-56-amd64"``;
    None when there is no such line. Pure.
    """
    for line in apt_cache_depends_output.splitlines():
        m = re.match(r"\s*\|?Depends:\s+(linux-image-\d\S*)", line)
        if m:
            return m.group(1)
    return None


def kernel_version_of(package: str) -> str:
    """``"linux-image-6.1.0-56-amd64"`` -> ``"6.1.0-56-amd64"`` (the module directory name).

    Raises:
        ValueError: not a ``linux-image-<version>`` name.
    """
    if not package.startswith("linux-image-") or len(package) <= len("linux-image-"):
        raise ValueError(f"not a kernel image package: {package!r}")
    return package[len("linux-image-") :]


def resolve_kernel_package() -> str | None:
    """The versioned package ``linux-image-amd64`` depends on today, per apt's lists.

    Runs ``apt-get update`` once (as root) when apt knows no candidate.
    Returns None when it cannot be resolved (no lists, offline, not root).
    """

    def depends() -> str | None:
        r = _run(["apt-cache", "depends", KERNEL_META_PACKAGE], capture_output=True)
        return parse_kernel_package(r.stdout) if r.returncode == 0 else None

    pkg = depends()
    if pkg is None and os.geteuid() == 0:
        _log("apt knows no kernel package yet: apt-get update")
        _run(["apt-get", "update", "-qq"], stdout=sys.stderr)
        pkg = depends()
    return pkg


def _cached_kernels(kernel_dir: Path) -> list[Path]:
    """Complete cached kernel roots (newest version last)."""
    roots = [p / "root" for p in kernel_dir.glob("*") if (p / ".complete").exists()]
    return sorted(roots, key=lambda r: [int(x) if x.isdigit() else x for x in re.split(r"[.-]", r.parent.name)])


def ensure_kernel(cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR) -> Path:
    """The stock kernel's ``vmlinuz``, downloaded and unpacked if not cached.

    Layout: ``<cache>/kernel/<version>/root`` holds the unpacked package
    (``boot/vmlinuz-<version>``, ``lib/modules/<version>`` with ``depmod``
    run), ``<cache>/kernel/<version>/.complete`` marks it finished. The
    package is exactly the one ``linux-image-amd64`` depends on (never a
    glob: ``apt-get download`` would fetch every match). A ``.deb`` of that
    package already in ``<cache>/kernel/<version>/`` or ``<cache>/kernel/`` is
    reused. Offline, the newest complete cached kernel is used.

    Raises:
        RuntimeError: nothing cached and the package cannot be resolved.
        subprocess.CalledProcessError: download/unpack/depmod failed.
    """
    kernel_dir = Path(cache_dir).expanduser() / "kernel"
    pkg = resolve_kernel_package()
    if pkg is None:
        cached = _cached_kernels(kernel_dir)
        if not cached:
            raise RuntimeError(f"cannot resolve {KERNEL_META_PACKAGE} (apt lists missing?) and no kernel cached")
        _log(f"cannot resolve {KERNEL_META_PACKAGE}; using cached {cached[-1].parent.name}")
        return _vmlinuz(cached[-1])
    version = kernel_version_of(pkg)
    vdir = kernel_dir / version
    root = vdir / "root"
    if (vdir / ".complete").exists():
        return _vmlinuz(root)
    vdir.mkdir(parents=True, exist_ok=True)
    debs = sorted(vdir.glob(f"{pkg}_*.deb")) or sorted(kernel_dir.glob(f"{pkg}_*.deb"))
    if not debs:
        _log(f"downloading {pkg} into {vdir}")
        _run(["apt-get", "download", "-q", pkg], cwd=vdir, check=True, stdout=sys.stderr)
        debs = sorted(vdir.glob(f"{pkg}_*.deb"))
        if not debs:
            raise RuntimeError(f"apt-get download {pkg} left no .deb in {vdir}")
    _log(f"unpacking {debs[-1].name}")
    if root.exists():
        shutil.rmtree(root)
    _run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
    modules = root / "lib" / "modules"
    if not (modules / version).is_dir():
        # usrmerge packages put modules under usr/lib
        modules = root / "usr" / "lib" / "modules"
        if (modules / version).is_dir() and not (root / "lib").exists():
            (root / "lib").symlink_to("usr/lib")
    _log(f"depmod {version}")
    _run(["depmod", "-b", str(root), version], check=True)
    vmlinuz = _vmlinuz(root)
    (vdir / ".complete").write_text(f"{pkg}\n")
    return vmlinuz


def _vmlinuz(root: Path) -> Path:
    found = sorted((root / "boot").glob("vmlinuz-*"))
    if not found:
        raise RuntimeError(f"no vmlinuz in {root / 'boot'}")
    return found[-1]


def ensure_vm_prerequisites(cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR) -> Path:
    """Make sure the VM can boot; returns the ``vmlinuz`` path to pass to :func:`run_in_vm`.

    Idempotent and quick (about 1 s: one dpkg-query, one apt-cache) when all
    is present. Otherwise installs the apt packages of :data:`APT_PACKAGES`,
    virtme-ng and the lab's Python packages (:data:`GUEST_PYTHON_PACKAGES`, pip), and the
    stock kernel (see :func:`ensure_kernel`).
    Logs what it does to stderr.

    Raises:
        PermissionError: something must be installed and we are not root.
        RuntimeError / subprocess.CalledProcessError: an install step failed.
    """
    ensure_apt_packages()
    ensure_vng()
    ensure_python_packages()
    return ensure_kernel(cache_dir)


# --- running a command in the guest -------------------------------------------------------


def guest_env(python: str = sys.executable, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables the guest script exports (pure apart from reading os.environ).

    ``PATH`` starts with the interpreter's directory (so ``python`` there is
    this interpreter, not a pyenv shim), ``PYTHON`` names it, bytecode
    writing is off (the checkout is read-only in the guest), output is
    unbuffered, ``VIRTUAL_ENV`` is kept when set. ``extra`` wins.
    """
    bindir = str(Path(python).parent)
    env = {
        "PATH": f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHON": python,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "DIRECTORD_IN_VM": "1",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
    }
    if os.environ.get("VIRTUAL_ENV"):
        env["VIRTUAL_ENV"] = os.environ["VIRTUAL_ENV"]
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    if extra:
        env.update(extra)
    return env


def guest_script(
    argv: Sequence[str],
    *,
    out_dir: str | os.PathLike,
    cwd: str | os.PathLike,
    env: Mapping[str, str],
    modules: Sequence[str] = GUEST_MODULES,
) -> str:
    """The bash script the guest runs (pure).

    It cds to ``cwd``, loads ``modules`` (one ``modprobe -a``; if that fails,
    one by one, tolerating missing ones; results in ``modules.log``),
    exports ``env``, runs ``argv`` with stdout to ``<out>/stdout.log`` and
    stderr to ``<out>/stderr.log``, and writes the exit status to
    ``<out>/status`` (through a temporary file, so a present status file is
    always complete).
    """
    out = shlex.quote(str(out_dir))
    mods = " ".join(shlex.quote(m) for m in modules)
    lines = [
        "#!/bin/bash",
        "# generated by director.lab.vm: runs one command in the stock-kernel guest",
        f"OUT={out}",
        'exec 3>>"$OUT/guest.log"',
        'echo "guest: kernel $(uname -r)" >&3',
        f'if ! modprobe -a {mods} 2>>"$OUT/modules.log"; then',
        (f'  for m in {mods}; do modprobe "$m" 2>>"$OUT/modules.log" || echo "guest: module $m unavailable" >&3; done'),
        "fi",
    ]
    for k, v in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise ValueError(f"invalid environment variable name {k!r}")
        lines.append(f"export {k}={shlex.quote(str(v))}")
    lines += [
        (
            f"cd {shlex.quote(str(cwd))} || {{ echo 'guest: cannot cd to {cwd}' >&3; "
            f'echo 126 >"$OUT/status.tmp"; mv "$OUT/status.tmp" "$OUT/status"; exit 0; }}'
        ),
        'echo "guest: running $(date +%s)" >&3',
        f'{shlex.join(argv)} </dev/null >"$OUT/stdout.log" 2>"$OUT/stderr.log"',
        "rc=$?",
        'echo "guest: exit $rc $(date +%s)" >&3',
        'echo "$rc" >"$OUT/status.tmp" && mv "$OUT/status.tmp" "$OUT/status"',
        "sync",
        "",
    ]
    return "\n".join(lines)


def kernel_modules(vmlinuz: str | os.PathLike) -> set[str] | None:
    """Module names (``_`` form) the kernel at ``<root>/boot/vmlinuz-<ver>`` ships.

    Read from ``<root>/lib/modules/<ver>/modules.dep`` and ``modules.builtin``;
    None when those files are not there (then nothing is filtered).
    """
    vmlinuz = Path(vmlinuz)
    version = vmlinuz.name[len("vmlinuz-") :] if vmlinuz.name.startswith("vmlinuz-") else None
    if not version:
        return None
    mdir = vmlinuz.parent.parent / "lib" / "modules" / version
    names: set[str] = set()
    found = False
    for fname in ("modules.dep", "modules.builtin"):
        try:
            text = (mdir / fname).read_text()
        except OSError:
            continue
        found = True
        for line in text.splitlines():
            path = line.split(":", 1)[0].strip()
            if path:
                base = path.rsplit("/", 1)[-1]
                names.add(base.split(".ko", 1)[0].replace("-", "_"))
    return names if found else None


class _Tail:
    """Copies what is appended to a file onto a stream."""

    def __init__(self, path: Path, stream) -> None:
        self.path, self.stream, self.pos = path, stream, 0

    def pump(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        if data:
            self.pos += len(data)
            buf = getattr(self.stream, "buffer", None)
            if buf is not None:
                self.stream.flush()
                buf.write(data)
                buf.flush()
            else:
                self.stream.write(data.decode(errors="replace"))
                self.stream.flush()


def _kill_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _console_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no console log)"
    return "\n".join(text.splitlines()[-lines:])


def run_in_vm(
    argv: Sequence[str],
    *,
    out_dir: str | os.PathLike,
    timeout_s: float,
    memory: str = "2G",
    cpus: int = 2,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    kernel: str | os.PathLike | None = None,
    stream: bool = True,
    modules: Sequence[str] = GUEST_MODULES,
) -> int:
    """Boot the stock kernel, run ``argv`` in the guest as root, return its exit status.

    ``out_dir`` (created if needed, shared read-write with the guest) receives
    ``guest.sh`` (the generated script), ``stdout.log``, ``stderr.log``,
    ``status``, ``guest.log``/``modules.log`` (guest notes) and
    ``console.log`` (vng's verbose console: kernel log). Files the command
    writes under ``out_dir`` (e.g. pytest's ``--junitxml``) are there too.
    ``timeout_s`` (seconds) bounds the whole boot+run on the host; then the
    vng/QEMU process group is killed. ``cwd`` is writable in the guest
    through a throw-away overlay (``--overlay-rwdir``: caches such as
    ``.pytest_cache`` work there and vanish with the guest). ``memory`` is QEMU's ``-m``,
    ``cpus`` the vCPU count. ``cwd`` defaults to the repository root, ``env``
    adds guest environment variables (see :func:`guest_env`), ``kernel`` is
    a ``vmlinuz`` (default: :func:`ensure_vm_prerequisites`). With ``stream``
    the command's stdout/stderr are copied to ours while it runs; otherwise
    they are printed after it ends.

    Returns the command's exit status, :data:`STATUS_TIMEOUT` (124) on
    timeout, :data:`STATUS_NO_RESULT` (125) if the guest wrote no status
    (then the console tail is printed to stderr). vng's own exit code is
    ignored (it is 255 whatever happened).

    Raises:
        FileNotFoundError: no ``vng``.
    """
    if not argv:
        raise ValueError("empty argv")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("status", "status.tmp", "stdout.log", "stderr.log", "guest.log", "modules.log", "console.log"):
        (out / name).unlink(missing_ok=True)
    vmlinuz = Path(kernel) if kernel else ensure_vm_prerequisites()
    vng = find_vng()
    if not vng:
        raise FileNotFoundError("vng (virtme-ng) not installed: call ensure_vm_prerequisites()")
    shipped = kernel_modules(vmlinuz)
    if shipped is not None:
        absent = [m for m in modules if m.replace("-", "_") not in shipped]
        if absent:
            _log(f"not in this kernel, not loaded: {' '.join(absent)}")
        modules = [m for m in modules if m.replace("-", "_") in shipped]
    workdir = Path(cwd) if cwd else (REPO_ROOT if (REPO_ROOT / "pyproject.toml").exists() else Path.cwd())
    script = out / "guest.sh"
    script.write_text(guest_script(argv, out_dir=out, cwd=workdir, env=guest_env(extra=env), modules=modules))
    script.chmod(0o755)
    cmd = [
        vng,
        "--run",
        str(vmlinuz),
        "--disable-kvm",
        "--memory",
        memory,
        "--cpus",
        str(cpus),
        "--overlay-rwdir",
        str(workdir),
        "--rwdir",
        str(out),
        "--cwd",
        str(workdir),
        "--verbose",
        "--exec",
        f"bash {shlex.quote(str(script))}",
    ]
    _log(f"booting {vmlinuz.name} (TCG, {cpus} CPUs, {memory}): {shlex.join(argv)}")
    t0 = time.monotonic()
    timed_out = False
    with open(out / "console.log", "wb") as console:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            cwd=str(workdir),
            start_new_session=True,
        )
        tails = [_Tail(out / "stdout.log", sys.stdout), _Tail(out / "stderr.log", sys.stderr)] if stream else []
        try:
            while proc.poll() is None:
                if time.monotonic() - t0 > timeout_s:
                    timed_out = True
                    _log(f"timeout after {timeout_s:.0f} s: killing the VM")
                    _kill_group(proc)
                    break
                for t in tails:
                    t.pump()
                time.sleep(0.5)
        except BaseException:
            _kill_group(proc)
            raise
    for t in tails:
        t.pump()
    if not stream:
        for name, stream_ in (("stdout.log", sys.stdout), ("stderr.log", sys.stderr)):
            _Tail(out / name, stream_).pump()
    elapsed = time.monotonic() - t0
    status_file = out / "status"
    if status_file.exists():
        try:
            rc = int(status_file.read_text().strip())
        except ValueError:
            rc = STATUS_NO_RESULT
        _log(f"guest command exited {rc} ({elapsed:.0f} s including boot)")
        return rc
    _log(
        f"guest wrote no exit status ({'timed out' if timed_out else 'crashed or never started'}, "
        f"{elapsed:.0f} s); console tail:"
    )
    print(_console_tail(out / "console.log"), file=sys.stderr, flush=True)
    return STATUS_TIMEOUT if timed_out else STATUS_NO_RESULT


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m director.lab.vm [--timeout S] [--out DIR] [--memory M] [--cpus N] -- CMD ...``.

    Ensures the prerequisites, runs CMD in the guest and exits with its status.
    """
    ap = argparse.ArgumentParser(
        prog="python -m director.lab.vm",
        description="Run a command inside a stock-kernel VM (ip_vs available) and exit with its status.",
    )
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds for boot + command (default 1800)")
    ap.add_argument("--out", default=None, help="result folder (default: out/vm-<timestamp> in the repository)")
    ap.add_argument("--memory", default="2G")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR))
    ap.add_argument(
        "--kernel",
        default=None,
        help="vmlinuz to boot (default: ensure the prerequisites and use the cached stock kernel)",
    )
    ap.add_argument("--env", action="append", default=[], metavar="K=V", help="extra guest environment variable")
    ap.add_argument("--quiet", action="store_true", help="print the guest's output only after it ends")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ...")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("no command given (use: -- CMD ...)")
    env = {}
    for item in args.env:
        k, sep, v = item.partition("=")
        if not sep:
            ap.error(f"--env needs K=V, got {item!r}")
        env[k] = v
    out = Path(args.out) if args.out else REPO_ROOT / "out" / time.strftime("vm-%Y%m%d-%H%M%S")
    kernel = Path(args.kernel) if args.kernel else ensure_vm_prerequisites(args.cache_dir)
    return run_in_vm(
        command,
        out_dir=out,
        timeout_s=args.timeout,
        memory=args.memory,
        cpus=args.cpus,
        env=env,
        kernel=kernel,
        stream=not args.quiet,
    )


if __name__ == "__main__":
    sys.exit(main())
