"""Checks the deployment files that cannot run here: the Kubernetes manifests and the
compose file parse and hold what operators rely on, and the container recipe builds in
stages and runs as a non-root user. Run by .ci/run; exits non-zero naming the problem."""

import pathlib
import sys

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
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
if "ConfigMap" in kinds:
    import tomllib

    tomllib.loads(kinds["ConfigMap"]["data"]["config.toml"])

compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
for service in ["postgres", "mailpit", "stub", "migrate", "topupd-1", "topupd-2"]:
    need(service in compose.get("services", {}), f"compose: service {service}")

dockerfile = (DEPLOY / "Dockerfile").read_text().splitlines()
stages = [line for line in dockerfile if line.startswith("FROM ")]
users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
need(len(stages) >= 2, "Dockerfile: a build stage and a runtime stage")
need(users and not users[-1].startswith(("0", "root")), "Dockerfile: runs as a non-root user")
need(any(line.startswith("COPY --from=") for line in dockerfile), "Dockerfile: copies the binary from the build stage")

for problem in problems:
    print(f"deploy check: missing {problem}", file=sys.stderr)
print(f"deploy check: {len(problems)} problems")
sys.exit(1 if problems else 0)
