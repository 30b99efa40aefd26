"""A Ray instance started by this package for one machine: every listener on the loopback address, and Ray's own
authentication left at its default (token mode for a new local instance in Ray 2.60), with a token made for this
instance only when the user has none.

Ray 2.60 offers no bind-address option: its servers listen on the node address, which for a Linux machine is a
routable one, unless Ray runs in its single-machine mode (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, the mode it uses on
macOS and Windows), where the node address is loopback. That mode is read from the environment by the processes
Ray starts and from `ray._private.ray_constants` by this driver (computed when `ray` was imported), so both are
set for the start and restored after it. tests/test_local_ray.py checks the listeners of a real run.

A run's Ray also starts without the daemons it never uses (`lean_start`): start-up on two cores is CPU-bound, and
those three Python processes are a fifth of it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path

SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
AUTH_MODE, TOKEN, TOKEN_PATH = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
_made: list[Path] = []  # token folders made for the running instance, removed when it stops


def _needs_a_token() -> bool:
    """Token mode (set, or Ray's default when unset) and no token of the user's anywhere Ray looks."""
    mode = os.environ.get(AUTH_MODE)
    if mode is not None and mode.lower() != "token":
        return False
    return not (os.environ.get(TOKEN) or os.environ.get(TOKEN_PATH) or (Path.home() / ".ray" / "auth_token").exists())


def _fresh_token() -> Path:
    """A random token in an owner-only folder and file, for this instance alone (never the user's ~/.ray)."""
    folder = Path(tempfile.mkdtemp(prefix="hsplit-ray-auth-"))  # mode 0700
    path = folder / "auth_token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    _made.append(folder)
    return path


def _reload_auth_settings() -> None:
    """This driver read RAY_AUTH_MODE and the token when `ray` was imported; read them again (what Ray itself does
    when it turns token mode on by default)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def loopback_start():
    """Around `ray.init(address="local")`: the single-machine mode for the start, a token when one is needed
    (kept in the environment while the instance runs: workers started later read it)."""
    import ray._private.ray_constants as constants

    if _needs_a_token():
        os.environ[AUTH_MODE] = "token"  # explicit: Ray's default, said without its start-up warning
        os.environ[TOKEN_PATH] = str(_fresh_token())
        _reload_auth_settings()
    saved_env, saved_flag = os.environ.get(SINGLE_MACHINE), constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_MACHINE] = "0"
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(SINGLE_MACHINE, None)
        else:
            os.environ[SINGLE_MACHINE] = saved_env


def forget_tokens() -> None:
    """After the instance stopped: its token files go, and the environment no longer names them."""
    while _made:
        folder = _made.pop()
        if os.environ.get(TOKEN_PATH, "").startswith(str(folder)):
            os.environ.pop(TOKEN_PATH, None)
            os.environ.pop(AUTH_MODE, None)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def lean_start():
    """Around `ray.init(address="local")`: Ray's head without the daemons a run never uses: the API server (job
    submission, the state API and the dashboard; Ray waits for it to publish its address), the autoscaler monitor
    (one machine never scales) and the log monitor (it forwards workers' output to the driver, which a run turns
    off with log_to_driver=False). Through Ray's private node start-up (the
    options exist, `ray start` passes two of them, `ray.init` offers none). On two cores this takes ~1.4 s off
    `ray.init` and ~3.5 CPU-seconds off start-up. Where a Ray upgrade moved them, Ray starts as before
    (tests/test_local_ray.py fails then, not a user's run)."""
    import ray._private.node as node
    import ray._private.parameter as parameter

    params, api_server = getattr(parameter, "RayParams", None), getattr(node.Node, "start_api_server", None)
    if params is None or api_server is None:
        yield
        return

    class LeanParams(params):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs | {"no_monitor": True, "include_log_monitor": False})

    parameter.RayParams, node.Node.start_api_server = LeanParams, lambda self, **_: None
    try:
        yield
    finally:
        parameter.RayParams, node.Node.start_api_server = params, api_server
