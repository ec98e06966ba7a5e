"""What every console script shares: one message format and one exit code for the one error family
(:mod:`theremin.errors`).

A user error (bad input, a bad setting, a file that cannot be used) is a :class:`ThereminError` whose
message names the file or setting and the reason. Console scripts print it as one line,
``theremin-<app>: error: <message>``, on stderr and exit with :data:`EXIT_USER_ERROR`; no traceback.
Anything else is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback of user errors too.

    @hydra_app("train")                 # conf/train.yaml, errors answered as above
    def main(cfg): ...
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
from collections.abc import Callable

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from theremin.config import conf_dir
from theremin.errors import user_error

EXIT_USER_ERROR = 2


log = logging.getLogger("theremin")






def format_error(app: str, err: BaseException) -> str:
    return f"{app}: error: {err}"


def report_and_exit(app: str, err: BaseException) -> None:
    """Print a user error the one way and exit; re-raise a bug (or anything under HYDRA_FULL_ERROR=1)."""
    ue = user_error(err)
    if ue is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    print(format_error(app, ue), file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR) from None


def _in_multirun() -> bool:

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def hydra_app(config_name: str, app: str | None = None) -> Callable:
    """``@hydra.main`` over ``fn(cfg)`` with theremin's configs and its one way of answering user errors.

    In a multirun a user error fails only its own job: it is logged and the job returns NaN (sweepers such as
    Optuna record a failed trial and go on) instead of ending the whole sweep."""


    name = app or f"theremin-{config_name}"

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def task(cfg):
            try:
                return fn(cfg)
            except Exception as e:
                if _in_multirun() and user_error(e) is not None:
                    log.error("%s", format_error(name, user_error(e)))
                    return math.nan
                report_and_exit(name, e)

        return hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name)(task)

    return deco


def run_cli(app: str, fn: Callable, *args, **kwargs):
    """The same answer for a console script that is not a Hydra app (argparse tools)."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        report_and_exit(app, e)
