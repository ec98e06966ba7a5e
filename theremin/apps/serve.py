"""theremin-serve: a thin Hydra entrypoint (conf/serve.yaml) that loads a checkpoint and runs uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from theremin import config as resolvers  # noqa: F401
from theremin.apps.cli import hydra_app
from theremin.apps.generate import latest_checkpoint
from theremin.config import plain
from theremin.serve.app import HttpSettings, create_app, is_loopback
from theremin.serve.forms import Limits
from theremin.serve.service import RollService, ServeSettings
from theremin.serve.store import StoreLimits

log = logging.getLogger("theremin.serve")


def build_service(cfg: DictConfig):
    """The RollService a config describes (checkpoint `latest` = the newest last.ckpt under paths.log_dir)."""

    ckpt = latest_checkpoint(cfg.paths.log_dir) if cfg.ckpt_path == "latest" else Path(cfg.ckpt_path)
    c = plain(cfg)
    store = dict(c["store"])
    prune_every_s = float(store.pop("prune_every_s", 1.0))
    settings = ServeSettings(
        rolls_dir=c["rolls_dir"], device=c["device"], max_upload_bytes=int(c["max_upload_bytes"]),
        timeout_s=float(c["timeout_s"]), retry_after_s=int(c["retry_after_s"]), queue_size=int(c["queue_size"]),
        workers=int(c["workers"]), max_batch_rows=int(c["max_batch_rows"]),
        max_constraint_sets=int(c["max_constraint_sets"]), threads=c.get("threads"),
        prune_every_s=prune_every_s,
        limits=Limits(**c["limits"]), store=StoreLimits(**store), render=c["render"])
    return RollService(ckpt, settings)


def http_settings(cfg: DictConfig) -> HttpSettings:
    """The HTTP front's settings of a config: the bind host, allowed_hosts, body_timeout_s, max_per_client."""
    hosts = plain(cfg.get("allowed_hosts"))
    return HttpSettings(host=str(cfg.host), allowed_hosts=[hosts] if isinstance(hosts, str) else hosts,
                        body_timeout_s=float(cfg.body_timeout_s), max_per_client=int(cfg.max_per_client))


def warn_if_exposed(host: str, port: int) -> bool:
    """Log a warning when ``host`` is reachable beyond this machine (0.0.0.0, ::, a LAN address, a name):
    the server has no authentication. Whether it warned."""
    if is_loopback(host):
        return False
    log.warning("theremin-serve listens on %s:%s, beyond this machine: the server has no authentication, so anyone "
                "who can reach this port can roll, render and fill its disk (up to store.max_mb). Put it behind a "
                "firewall or an authenticating proxy, or bind host=127.0.0.1", host, port)
    return True


@hydra_app("serve")
def main(cfg: DictConfig) -> None:
    import uvicorn

    http = http_settings(cfg)
    service = build_service(cfg)
    log.info("theremin-serve: %s on http://%s:%s (rolls in %s)", service.checkpoint, cfg.host, cfg.port,
             service.store.root)
    warn_if_exposed(str(cfg.host), int(cfg.port))
    print(f"theremin-serve: open http://{cfg.host}:{cfg.port}/  (model {service.checkpoint})", flush=True)
    try:
        uvicorn.run(create_app(service, http), host=cfg.host, port=int(cfg.port), log_level=cfg.log_level,
                    timeout_graceful_shutdown=5)
    finally:
        service.close()


if __name__ == "__main__":
    main()
