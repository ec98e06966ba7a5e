# theremin training image (GPU): `docker build -t ghcr.io/your-org/theremin:latest .`; k8s/README.md runs it.
#
# Base: python:3.11-slim-bookworm, not pytorch/pytorch. PyPI's default torch wheel for Linux x86_64 is the CUDA
# build and brings the CUDA runtime, cuDNN and NCCL as nvidia-* wheels, so the image needs no CUDA base: only
# the host's NVIDIA driver, which the NVIDIA container toolkit / k8s device plugin mounts in. pytorch/pytorch
# would fix a conda Python and a second copy of torch that pip may replace anyway. Python 3.11 on Debian
# bookworm is what the project is developed and tested on (libfluidsynth3 2.3 included).
FROM python:3.11-slim-bookworm

# libfluidsynth3: pyfluidsynth renders samples to audio. tini: PID 1 that forwards SIGTERM (pod deletion,
# preemption) to the trainer and reaps zombies; a bare python PID 1 ignores SIGTERM.
# No version pins: bookworm's packages only get security fixes, which we want.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libfluidsynth3 tini \
    && rm -rf /var/lib/apt/lists/*

# UID/GID 1000: k8s/*.yaml run as this user (runAsUser/fsGroup) so it can write the mounted volumes.
ARG UID=1000
RUN groupadd --gid "${UID}" theremin \
    && useradd --no-log-init --create-home --uid "${UID}" --gid "${UID}" --shell /bin/bash theremin

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# torch first, in its own layer: it is most of the image (GBs of CUDA wheels) and changes least.
# Pin for reproducible images: --build-arg TORCH_SPEC=torch==X.Y.Z (pyproject keeps torch>=2.4 open).
ARG TORCH_SPEC="torch>=2.4"
# DL3013 (pin versions): hadolint cannot see through the build arg, which is where the pin goes.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "${TORCH_SPEC}"

# The dependencies, cached until pyproject.toml changes: install against an empty package first, then the
# real package without its dependencies. A regular (not editable) install: the Hydra configs ship inside the
# package (theremin/conf), so the installed wheel works from any folder.
COPY pyproject.toml README.md ./
# DL3013 (pin versions): the versions are pyproject.toml's to state, not this file's.
# hadolint ignore=DL3013
RUN mkdir theremin && touch theremin/__init__.py \
    && pip install --no-cache-dir . \
    && rm -rf theremin build ./*.egg-info

COPY theremin/ theremin/
COPY scripts/ scripts/
RUN pip install --no-cache-dir --no-deps . && rm -rf build ./*.egg-info

# Runs and checkpoints go to /app/outputs (conf/paths: ${THEREMIN_ROOT}/outputs), generated data to /data:
# mount volumes there (k8s/pvc.yaml) or they vanish with the container. Both belong to the runtime user.
# WANDB_MODE=offline: no network needed, `wandb sync` later; set WANDB_MODE=online (+ WANDB_API_KEY) to log live.
ENV THEREMIN_ROOT=/app \
    THEREMIN_DATA=/data \
    WANDB_MODE=offline
RUN mkdir -p /data /app/outputs && chown theremin:theremin /data /app/outputs

# numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd
USER ${UID}:${UID}

# theremin-serve (the web page + HTTP API, k8s/serve-deployment.yaml) listens here when started with host=0.0.0.0:
#   docker run --rm -p 8000:8000 -v "$PWD/outputs:/app/outputs" -v "$PWD/data:/data" IMAGE \
#       theremin-serve host=0.0.0.0 ckpt_path=/app/outputs/<run>/checkpoints/last.ckpt
EXPOSE 8000

ENTRYPOINT ["tini", "--"]
# k8s manifests replace this with `args:` (the ENTRYPOINT stays), e.g. torchrun for multi-node
CMD ["theremin-train", "trainer=gpu"]
