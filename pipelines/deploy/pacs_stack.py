"""Bring a loopback PACS + MONAI Label stack up and down: Orthanc with DICOMweb, and the MONAI Label app serving
the ResUNet bundles against it (with its OHIF viewer at ``/ohif/``).

Usage::

    python pipelines/deploy/pacs_stack.py up --dicom-dir /data/dicom [--workdir ./resunet-pacs]
    python pipelines/deploy/pacs_stack.py status --workdir ./resunet-pacs
    python pipelines/deploy/pacs_stack.py down --workdir ./resunet-pacs

``up`` starts Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) on a free loopback port with its storage in
``WORKDIR/orthanc``, uploads every DICOM file under ``--dicom-dir`` (``POST /instances``), writes the MONAI Label
app (``WORKDIR/app``, the bundles with their trained weights) unless it exists, starts MONAI Label in its venv
(``bash pipelines/deploy/label_env.sh`` builds it) with ``--studies http://127.0.0.1:PORT/dicom-web``, and prints
the URLs. ``down`` stops both (SIGTERM to each process group and every descendant, SIGKILL after ``--timeout``)
and removes the pid files; the data in WORKDIR stay. Everything listens on 127.0.0.1 only.

Runs with any Python 3.9+ where ``monai_resunet`` imports (the main environment or the label venv).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
DEFAULT_MODELS = "resunet3d_segmentation,resunet2d_segmentation"
STATE_FILE = "stack.json"
SERVICES = ("monailabel", "orthanc")  # stop order: the client before the PACS


def default_label_venv() -> Path:
    """The venv ``pipelines/deploy/label_env.sh`` builds (same environment variables)."""
    if os.environ.get("MONAI_RESUNET_LABEL_VENV"):
        return Path(os.environ["MONAI_RESUNET_LABEL_VENV"])
    cache = os.environ.get("MONAI_RESUNET_CACHE") or os.path.join(Path.home(), ".cache", "monai_resunet")
    return Path(cache) / "label-venv"


def free_port(preferred: int = 0) -> int:
    """``preferred`` when it is free on 127.0.0.1, else any free port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port on 127.0.0.1")


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 60):
    """``(status, body)`` of an HTTP request (HTTP errors are returned, connection errors raised)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def orthanc_config(workdir: Path, http_port: int) -> dict:
    """Orthanc's configuration: loopback HTTP with DICOMweb, no DICOM (DIMSE) port, storage under ``workdir``."""
    storage = workdir / "orthanc" / "storage"
    return {
        "Name": "RESUNET_PACS",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,  # Orthanc answers only clients on this machine
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Host": f"127.0.0.1:{http_port}"},
        "HttpThreadsCount": 20,
        "StableAge": 5,
        "SaveJobs": False,
    }


# ---------------------------------------------------------------------------------------------------------------
# processes


def _pid_file(workdir: Path, name: str) -> Path:
    return workdir / "run" / f"{name}.pid"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie has exited
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children that started their own session included)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def start_process(cmd: list[str], log: Path, pid_file: Path, env: dict | None = None, cwd: Path | None = None):
    """Start ``cmd`` in its own process group (its pid is the group id), output to ``log``; write ``pid_file``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": proc.pid, "cmd": cmd}))
    os.replace(tmp, pid_file)
    return proc


def stop_process(pid_file: Path, timeout: float = 20.0) -> str:
    """Stop the process group of ``pid_file`` and every descendant: SIGTERM, then SIGKILL after ``timeout``.
    Returns what was done, in words. A pid now used by an unrelated program (not the recorded command) is left."""
    if not pid_file.is_file():
        return "not running (no pid file)"
    info = json.loads(pid_file.read_text())
    pid, cmd = int(info["pid"]), info["cmd"]
    if not _alive(pid) or Path(cmd[0]).name not in _cmdline(pid):
        pid_file.unlink()
        return f"not running (pid {pid} gone)"
    victims = {pid, *_descendants(pid)}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        for p in list(victims):
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                victims.discard(p)
        deadline = time.time() + (timeout if sig == signal.SIGTERM else 10)
        while time.time() < deadline:
            victims = {p for p in victims if _alive(p)}
            if not victims:
                pid_file.unlink()
                return f"stopped (pid {pid}, {'SIGTERM' if sig == signal.SIGTERM else 'SIGKILL'})"
            time.sleep(0.2)
    raise RuntimeError(f"{pid_file}: processes {sorted(victims)} survived SIGKILL")


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float, what: str) -> None:
    """Wait until ``url`` answers 200; fail with the log's tail when ``proc`` exits or ``timeout`` passes."""
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}; last lines of {log}:\n{_tail(log)}")
        try:
            if http("GET", url, timeout=5)[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.time() > deadline:
            raise RuntimeError(f"{what} not answering {url} after {timeout:.0f} s; last lines of {log}:\n{_tail(log)}")
        time.sleep(0.5)


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------------------------------
# Orthanc


def upload_dicom(orthanc_url: str, folder: Path) -> dict:
    """POST every file under ``folder`` to Orthanc's ``/instances``. Returns ``{"stored": n, "already": n,
    "skipped": {path: reason}, "series": {SeriesInstanceUID: {"modality", "description", "instances"}}}``."""
    stored, already, skipped, series_ids = 0, 0, {}, set()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.upper() == "DICOMDIR":
            skipped[str(path)] = "DICOMDIR (an index, not an image)"
            continue
        status, body = http("POST", f"{orthanc_url}/instances", path.read_bytes(), {"Expect": ""}, timeout=120)
        if status != 200:
            skipped[str(path)] = f"refused by Orthanc (HTTP {status}: not a DICOM file?)"
            continue
        answer = json.loads(body)
        stored += answer.get("Status") == "Success"
        already += answer.get("Status") == "AlreadyStored"
        series_ids.add(answer["ParentSeries"])
    series = {}
    for sid in sorted(series_ids):
        info = json.loads(http("GET", f"{orthanc_url}/series/{sid}")[1])
        tags = info["MainDicomTags"]
        series[tags.get("SeriesInstanceUID", sid)] = {
            "modality": tags.get("Modality", ""),
            "description": tags.get("SeriesDescription", ""),
            "instances": len(info.get("Instances", [])),
        }
    return {"stored": stored, "already": already, "skipped": skipped, "series": series}


def start_orthanc(workdir: Path, port: int = 0) -> tuple[str, subprocess.Popen]:
    orthanc = shutil.which("Orthanc")
    if orthanc is None:
        raise RuntimeError("Orthanc not found: apt-get install orthanc orthanc-dicomweb")
    if not os.path.isfile(DICOMWEB_PLUGIN):
        raise RuntimeError(f"{DICOMWEB_PLUGIN} not found: apt-get install orthanc-dicomweb")
    port = free_port(port)
    config = workdir / "orthanc" / "orthanc.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(orthanc_config(workdir, port), indent=2))
    log = workdir / "logs" / "orthanc.log"
    proc = start_process([orthanc, str(config)], log, _pid_file(workdir, "orthanc"))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/system", proc, log, 60, "Orthanc")
    status, body = http("GET", f"{url}/plugins")
    if status != 200 or "dicom-web" not in json.loads(body):
        raise RuntimeError(f"Orthanc started without its DICOMweb plugin; see {log}")
    return url, proc


# ---------------------------------------------------------------------------------------------------------------
# MONAI Label


def label_env(venv: Path, workdir: Path, extra: dict | None = None) -> dict:
    """The server's environment: the venv's bin first on PATH (``monailabel`` and dcmqi's ``itkimage2segimage``),
    this checkout importable, caches and sessions in ``workdir``, no tracking, and studies listed within a minute of
    reaching the PACS (MONAI Label caches the series list for 2 hours by default)."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(REPO),
        MONAI_LABEL_DICOMWEB_CACHE_PATH=str(workdir / "label-cache"),
        MONAI_LABEL_SESSION_PATH=str(workdir / "label-sessions"),
        MONAI_LABEL_TRACKING_ENABLED="false",
        MONAI_LABEL_AUTO_UPDATE_SCORING="false",
        MONAI_LABEL_DICOMWEB_CACHE_EXPIRY="60",
        MONAI_LABEL_DICOMWEB_READ_TIMEOUT="60",
    )
    env.update(extra or {})
    return env


def start_label(
    workdir: Path, studies: str, venv: Path, models: str, port: int = 8000, conf: dict | None = None
) -> tuple[str, subprocess.Popen]:
    python = venv / "bin" / "python"
    if not python.is_file():
        raise RuntimeError(f"MONAI Label venv not found at {venv}: build it with `bash pipelines/deploy/label_env.sh`")
    port = free_port(port)
    app = workdir / "app"
    cmd = [str(python), "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", studies,
           "--host", "127.0.0.1", "--port", str(port), "--conf", "models", models]  # fmt: skip
    for key, value in (conf or {}).items():
        cmd += ["--conf", key, str(value)]
    log = workdir / "logs" / "monailabel.log"
    proc = start_process(cmd, log, _pid_file(workdir, "monailabel"), env=label_env(venv, workdir), cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/info/", proc, log, 300, "MONAI Label")
    return url, proc


# ---------------------------------------------------------------------------------------------------------------
# commands


def _stop_all_best_effort(workdir: Path, timeout: float) -> None:
    """Stop every service of ``workdir``, reporting failures instead of raising (cleanup after a failed ``up``)."""
    for name in SERVICES:
        try:
            print(f"{name}: {stop_process(_pid_file(workdir, name), timeout)}", file=sys.stderr)
        except Exception as e:
            print(f"{name}: cleanup failed: {e}", file=sys.stderr)


def up(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve()
    dicom_dir = Path(args.dicom_dir).resolve() if args.dicom_dir else None
    if dicom_dir is not None and not dicom_dir.is_dir():
        print(f"error: --dicom-dir {dicom_dir}: not a folder", file=sys.stderr)
        return 2
    running = [n for n in SERVICES if _pid_file(workdir, n).is_file()]
    if running:
        print(f"error: {workdir} already has {running} running; `down --workdir {workdir}` first", file=sys.stderr)
        return 2
    workdir.mkdir(parents=True, exist_ok=True)
    from monai_resunet.label.make_app import write_label_app

    models = args.models
    try:
        orthanc_url, _ = start_orthanc(workdir, args.orthanc_port)
        print(f"Orthanc up: {orthanc_url}/app/explorer.html (storage {workdir / 'orthanc' / 'storage'})", flush=True)
        if dicom_dir is not None:
            t = time.time()
            report = upload_dicom(orthanc_url, dicom_dir)
            print(f"uploaded {dicom_dir} in {time.time() - t:.1f} s: {report['stored']} new instance(s), "
                  f"{report['already']} already stored, {len(report['skipped'])} file(s) skipped")  # fmt: skip
            for uid, s in report["series"].items():
                print(f"  series {uid}: {s['modality']} '{s['description']}', {s['instances']} instance(s)")
            for path, reason in report["skipped"].items():
                print(f"  skipped {path}: {reason}")
        app = workdir / "app"
        if not (app / "main.py").is_file():
            write_label_app(app, bundles=models.split(","), source=args.bundles)
            print(f"MONAI Label app written to {app}")
        conf = {"preload": "false"}
        label_url, _ = start_label(workdir, f"{orthanc_url}/dicom-web", Path(args.label_venv), models, args.port, conf)
    except BaseException as e:
        print(f"error: {e}; stopping what was started", file=sys.stderr)
        _stop_all_best_effort(workdir, args.timeout)
        raise
    state = {
        "orthanc": orthanc_url,
        "dicomweb": f"{orthanc_url}/dicom-web",
        "monailabel": label_url,
        "ohif": f"{label_url}/ohif/",
        "models": models.split(","),
        "workdir": str(workdir),
    }
    (workdir / STATE_FILE).write_text(json.dumps(state, indent=2))
    print(f"MONAI Label up: {label_url}/ (REST API docs: {label_url}/docs)")
    print(f"OHIF viewer:    {label_url}/ohif/")
    print(f"DICOMweb:       {orthanc_url}/dicom-web")
    print(f"logs: {workdir / 'logs'}; stop with: python {Path(__file__).relative_to(REPO)} down --workdir {workdir}")
    print(json.dumps(state))
    return 0


def down(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve()
    rc = 0
    for name in SERVICES:
        try:
            print(f"{name}: {stop_process(_pid_file(workdir, name), args.timeout)}")
        except RuntimeError as e:
            print(f"{name}: {e}", file=sys.stderr)
            rc = 1
    return rc


def status(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve()
    state = json.loads((workdir / STATE_FILE).read_text()) if (workdir / STATE_FILE).is_file() else {}
    up_count = 0
    for name in SERVICES:
        pid_file = _pid_file(workdir, name)
        pid = json.loads(pid_file.read_text())["pid"] if pid_file.is_file() else None
        alive = pid is not None and _alive(pid)
        up_count += alive
        print(f"{name}: {'running (pid %d)' % pid if alive else 'not running'}")
    for key in ("orthanc", "dicomweb", "monailabel", "ohif"):
        if key in state and up_count:
            print(f"{key}: {state[key]}")
    return 0 if up_count == len(SERVICES) else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start Orthanc + MONAI Label, upload DICOM, print the URLs")
    p_up.add_argument("--dicom-dir", help="folder of DICOM files to upload to Orthanc (searched recursively)")
    p_up.add_argument("--workdir", default="resunet-pacs", help="state, storage and logs (default: %(default)s)")
    p_up.add_argument("--models", default=DEFAULT_MODELS, help="bundles to serve (default: %(default)s)")
    p_up.add_argument("--bundles", default=None, help="folder holding the bundle folders (default: bundles/)")
    p_up.add_argument("--port", type=int, default=8000, help="MONAI Label port if free, else any (default: 8000)")
    p_up.add_argument("--orthanc-port", type=int, default=0, help="Orthanc HTTP port (default: a free one)")
    p_up.add_argument("--label-venv", default=str(default_label_venv()), help="MONAI Label venv (%(default)s)")
    p_up.add_argument("--timeout", type=float, default=20.0, help="seconds before SIGKILL when cleaning up")
    p_up.set_defaults(func=up)
    for name, func, text in (("down", down, "stop everything started by `up`"), ("status", status, "what runs")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--workdir", default="resunet-pacs", help="the folder given to `up` (default: %(default)s)")
        p.add_argument("--timeout", type=float, default=20.0, help="seconds between SIGTERM and SIGKILL")
        p.set_defaults(func=func)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
