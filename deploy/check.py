"""Checks the deployment files that cannot run here: the Kubernetes manifests and the
compose file parse and hold what operators rely on, their configuration passes
`topupd check-config`, and the container recipe builds in stages, runs as a non-root
user, carries sqlite3 for backups and declares its data volume. Run by .ci/run with the
binary to check configurations with; exits non-zero naming the problem.

    python3 deploy/check.py target/debug/topupd
"""

import os
import pathlib
import re
import subprocess
import sys
import tempfile
import tomllib

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
TOPUPD = str(pathlib.Path(sys.argv[1]).resolve()) if len(sys.argv) > 1 else None
VERSION = tomllib.loads((DEPLOY.parent / "Cargo.toml").read_text())["package"]["version"]
IMAGE = f"topupd:{VERSION}"
problems = []


def need(condition, problem):
    if not condition:
        problems.append(problem)


kinds = {}
for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        need(doc and doc.get("apiVersion") and doc.get("kind"), f"{path.name}: apiVersion and kind")
        kinds[doc["kind"]] = doc
for kind in ["Deployment", "Service", "ConfigMap", "Secret", "Job"]:
    need(kind in kinds, f"kubernetes: a {kind}")
if "Deployment" in kinds:
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    need("livenessProbe" in container and "readinessProbe" in container, "Deployment: liveness and readiness probes")
    need(pod.get("securityContext", {}).get("runAsNonRoot"), "Deployment: runAsNonRoot")
    need(pod.get("terminationGracePeriodSeconds", 0) > 20, "Deployment: grace period longer than the drain")
if "Job" in kinds:
    job = kinds["Job"]
    need(
        job["metadata"]["name"] == f"topupd-migrate-{VERSION.replace('.', '-')}",
        f"Job: a name carrying the version {VERSION}, so each release's Job can be applied",
    )
    need(job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"], "Job: runs migrate")
for kind in ["Deployment", "Job"]:
    if kind in kinds:
        image = kinds[kind]["spec"]["template"]["spec"]["containers"][0]["image"]
        need(image == IMAGE, f"{kind}: the image {IMAGE}")


def check_config(where, config_text, env):
    """`topupd check-config` on a deployment's configuration, in an empty directory."""
    if TOPUPD is None:
        return
    with tempfile.TemporaryDirectory() as empty:
        path = pathlib.Path(empty) / "config.toml"
        path.write_text(config_text)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("TOPUPD_")}
        done = subprocess.run(
            [TOPUPD, "--config", str(path), "check-config"],
            cwd=empty, env={**clean, **env}, capture_output=True, text=True,
        )
        need(done.returncode == 0, f"{where}: a configuration check-config accepts ({done.stderr.strip()})")
        need(sorted(os.listdir(empty)) == ["config.toml"], f"{where}: check-config leaves nothing behind")


if "ConfigMap" in kinds and "Secret" in kinds:
    check_config("kubernetes", kinds["ConfigMap"]["data"]["config.toml"], kinds["Secret"]["stringData"])

compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
for service in ["postgres", "mailpit", "stub", "migrate", "topupd-1", "topupd-2"]:
    need(service in compose.get("services", {}), f"compose: service {service}")
for name, service in compose.get("services", {}).items():
    if "build" in service:
        need(service["build"].get("dockerfile") == "deploy/Dockerfile", f"compose: {name} builds deploy/Dockerfile")
        need(service.get("image") == IMAGE, f"compose: {name} tags the image {IMAGE}")
if "topupd-1" in compose.get("services", {}):
    check_config("compose", "", compose["services"]["topupd-1"]["environment"])

dockerfile = (DEPLOY / "Dockerfile").read_text().splitlines()
stages = [line for line in dockerfile if line.startswith("FROM ")]
users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
need(len(stages) >= 2, "Dockerfile: a build stage and a runtime stage")
need(users and not users[-1].startswith(("0", "root")), "Dockerfile: runs as a non-root user")
need(any(line.startswith("COPY --from=") for line in dockerfile), "Dockerfile: copies the binary from the build stage")
runtime = "\n".join(dockerfile[max(i for i, line in enumerate(dockerfile) if line.startswith("FROM ")):])
need(re.search(r"apt-get install[^\n]*\bsqlite3\b", runtime), "Dockerfile: sqlite3 in the runtime image, for the documented backup")
need(re.search(r'^VOLUME \["?/var/lib/topupd"?\]', runtime, re.M), "Dockerfile: /var/lib/topupd declared as a volume")
need(re.search(r"^WORKDIR /var/lib/topupd$", runtime, re.M), "Dockerfile: runs in /var/lib/topupd, where the default database is")

for problem in problems:
    print(f"deploy check: missing {problem}", file=sys.stderr)
print(f"deploy check: {len(problems)} problems")
sys.exit(1 if problems else 0)
