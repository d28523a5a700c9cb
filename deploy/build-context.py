"""Builds the container image's build stage without a container engine: copies exactly
the files deploy/Dockerfile's build stage copies (honouring .dockerignore) into an empty
directory, runs that stage's RUN commands there, and checks that every file the runtime
stage copies from it exists. A file the recipe forgets fails here as it would in
`docker build`. Run by .ci/run; exits non-zero naming the problem.

    python3 deploy/build-context.py [--keep DIR]
"""

import fnmatch
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def stages(dockerfile):
    """Each stage's name and its instructions, as (keyword, arguments) pairs."""
    found = []
    joined = dockerfile.read_text().replace("\\\n", " ")
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append({"name": name, "steps": []})
        else:
            found[-1]["steps"].append((keyword, rest.strip()))
    return found


def ignored_patterns():
    path = ROOT / ".dockerignore"
    if not path.exists():
        return []
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def matches(parts, pattern):
    """Docker's rule: `*` and `?` stay inside one path segment, `**` spans any number."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(matches(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and matches(parts[1:], pattern[1:])


def is_ignored(relative, patterns):
    """Whether a path, or a directory above it, is excluded; a later `!` line re-includes."""
    parts = pathlib.PurePosixPath(relative).parts
    ignored = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        segments = pathlib.PurePosixPath(pattern.lstrip("!").strip("/")).parts
        if any(matches(parts[:depth], segments) for depth in range(1, len(parts) + 1)):
            ignored = not keep
    return ignored


def copy(sources, destination, workdir, patterns):
    """Docker's COPY: a directory's contents, files by name into a directory."""
    into_directory = destination.endswith("/") or len(sources) > 1
    target = workdir / destination
    for source in sources:
        path = ROOT / source
        if not path.exists():
            sys.exit(f"build context: COPY {source}: no such file in the repository")
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                relative = file.relative_to(ROOT).as_posix()
                if file.is_file() and not is_ignored(relative, patterns):
                    placed = target / file.relative_to(path)
                    placed.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, placed)
        else:
            placed = target / path.name if into_directory else target
            placed.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, placed)


def main():
    keep = sys.argv[sys.argv.index("--keep") + 1] if "--keep" in sys.argv else None
    recipe = stages(ROOT / "deploy" / "Dockerfile")
    build = next((s for s in recipe if s["name"] == "build"), None)
    if build is None:
        sys.exit("build context: the Dockerfile has no stage named build")
    patterns = ignored_patterns()
    context = pathlib.Path(keep or tempfile.mkdtemp(prefix="topupd-image-"))
    context.mkdir(parents=True, exist_ok=True)
    workdir = context
    for keyword, rest in build["steps"]:
        if keyword == "WORKDIR":
            workdir = context / rest.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, destination = shlex.split(rest)
            copy(sources, destination, workdir, patterns)
        elif keyword == "RUN":
            print(f"build context: RUN {rest}", flush=True)
            # The image's toolchain has no environment of ours: no target directory
            # shared with the checkout.
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("CARGO_TARGET", "CARGO_BUILD_TARGET"))
            }
            # What is checked is the context's files, not the optimisation: without the
            # release profile's link-time optimisation the build is about 2 minutes
            # shorter (9.5 against 11 on 2 cores).
            env["CARGO_PROFILE_RELEASE_LTO"] = "false"
            env["CARGO_PROFILE_RELEASE_CODEGEN_UNITS"] = "16"
            subprocess.run(["sh", "-c", rest], cwd=workdir, env=env, check=True)
        elif keyword not in ("ENV", "ARG", "LABEL"):
            sys.exit(f"build context: the build stage's {keyword} is not understood here")
    missing = []
    for stage in recipe:
        for keyword, rest in stage["steps"]:
            words = shlex.split(rest)
            if keyword == "COPY" and words[0] == "--from=build":
                for source in words[1:-1]:
                    if not (context / source.lstrip("/")).exists():
                        missing.append(source)
    for source in missing:
        print(f"build context: the runtime stage copies {source}, which the build did not make", file=sys.stderr)
    if not missing:
        print(f"build context: the image's build stage builds in {context}")
    if keep is None:
        shutil.rmtree(context, ignore_errors=True)
    sys.exit(1 if missing else 0)


main()
