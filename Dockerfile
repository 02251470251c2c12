# kubeflow-bot image: the Slack app (`kubeflow-bot serve`, the default) and the Pub/Sub
# worker (`docker run IMAGE worker`) from one image.
#
# Stages:
#   requirements      pyproject.toml -> requirements.txt ([project].dependencies only)
#   build             a virtualenv in /opt/venv: dependencies first (a layer that stays
#                     cached while only the source changes), then the project itself
#                     with --no-deps
#   manifests-source  the pinned kubeflow/manifests release: the tag, checked against
#                     the commit it must point at
#   manifests         that release rendered with kustomize and gzipped: the bundle the
#                     bot applies to each new cluster
#   runtime           the virtualenv, the rendered bundle, the default policy and a
#                     non-root user; no build tools
#
# The two manifests stages read nothing from the build context, so editing the project
# never renders Kubeflow again. Bumping the release is the two ARGs of manifests-source.
#
# Besides the base images (python, alpine/git, the official kustomize image), only pip
# (PyPI, or the index pip is configured with) and the one clone of kubeflow/manifests at
# the pinned tag, its commit verified, use the network: no apt, no curl, no ADD of URLs.

# --- requirements ----------------------------------------------------------------------
FROM python:3.11-slim AS requirements

WORKDIR /src
COPY pyproject.toml ./
# One requirement a line, exactly as pyproject.toml lists them. Only this file feeds the
# dependency layer below, so bumping the version or editing other tables keeps it cached.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt

# --- build -----------------------------------------------------------------------------
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /build
COPY --from=requirements /src/requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# The source comes after the dependencies, so that editing it reuses the layer above.
COPY pyproject.toml README.md ./
COPY bot/ bot/
COPY handlers/ handlers/
COPY provisioning/ provisioning/
RUN pip install --no-cache-dir --no-deps .

# --- manifests-source ------------------------------------------------------------------
FROM alpine/git:2.47.2 AS manifests-source

# The Kubeflow release the bot installs: a tag, and the commit it must point at (8 hex
# digits or more). A tag moved upstream fails the build instead of changing what every
# cluster gets; to bump the release, change both together.
ARG KUBEFLOW_MANIFESTS_VERSION=26.03
ARG KUBEFLOW_MANIFESTS_COMMIT=d68ebc7f

WORKDIR /manifests
RUN case "${KUBEFLOW_MANIFESTS_COMMIT}" in \
        [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*) ;; \
        *) echo "KUBEFLOW_MANIFESTS_COMMIT needs 8 or more hex digits" >&2; exit 1 ;; \
    esac \
    && git -c advice.detachedHead=false clone --quiet --depth 1 \
        --branch "${KUBEFLOW_MANIFESTS_VERSION}" \
        https://github.com/kubeflow/manifests.git . \
    && commit="$(git rev-parse HEAD)" \
    && case "${commit}" in \
        "${KUBEFLOW_MANIFESTS_COMMIT}"*) ;; \
        *) echo "kubeflow/manifests ${KUBEFLOW_MANIFESTS_VERSION} is ${commit}," \
               "not ${KUBEFLOW_MANIFESTS_COMMIT}" >&2; exit 1 ;; \
    esac \
    && rm -rf .git

# --- manifests -------------------------------------------------------------------------
FROM registry.k8s.io/kustomize/kustomize:v5.5.0 AS manifests

COPY --from=manifests-source /manifests /manifests
WORKDIR /manifests/example
# Kubeflow's own example, minus Kubeflow Pipelines and Trainer: their kustomizations pull
# remote bases while rendering, from outside the verified commit. `kustomize edit remove
# resource` says nothing when a path is not listed, so each path is checked to be listed
# before and gone after: a release that moves either fails the build instead of
# rendering it. Gzipped: about 9 MB of YAML, under 1 MB in the image.
RUN set -eu; \
    set -- \
        ../applications/pipeline/upstream/env/cert-manager/platform-agnostic-multi-user \
        ../applications/trainer/overlays; \
    listed() { \
        grep -Eq "^[[:space:]]*-[[:space:]]+$1([[:space:]]|\$)" kustomization.yaml; \
    }; \
    for path in "$@"; do \
        if ! listed "$path"; then echo "example lists no $path" >&2; exit 1; fi; \
    done; \
    kustomize edit remove resource "$@"; \
    for path in "$@"; do \
        if listed "$path"; then echo "example still lists $path" >&2; exit 1; fi; \
    done; \
    kustomize build . > /kubeflow.yaml; \
    gzip /kubeflow.yaml

# --- runtime ---------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

# PORT: App Engine flexible sends traffic to 8080 (and sets PORT=8080 itself); other
# hosts may override it. KUBEFLOW_BOT_POLICY: the sample policy copied below is only a
# default; operators mount their own file over /app/policy.yaml or point the variable
# elsewhere. KUBEFLOW_BOT_MANIFESTS: the bundle rendered above, so that every cluster
# gets the pinned release.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:$PATH" \
    PORT=8080 \
    KUBEFLOW_BOT_POLICY=/app/policy.yaml \
    KUBEFLOW_BOT_MANIFESTS=/app/kubeflow.yaml.gz

# A fixed uid/gid so that Kubernetes' runAsNonRoot can verify it. Its home, /app, is the
# working directory and the only place it may write (the embedded SQLite store, when no
# other store is configured).
RUN groupadd --system --gid 10001 kubeflow-bot \
    && useradd --system --no-log-init --uid 10001 --gid kubeflow-bot \
        --home-dir /app --create-home --shell /usr/sbin/nologin kubeflow-bot

# Owned by root (as COPY leaves it) and readable by all: the bot reads the bundle, never
# writes it. Copied before the virtualenv, which changes far more often.
COPY --from=manifests /kubeflow.yaml.gz /app/kubeflow.yaml.gz
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY policy.example.yaml /app/policy.yaml

USER 10001:10001
EXPOSE 8080

# No HEALTHCHECK: App Engine probes /healthz itself (app.yaml), and the same image runs
# the worker, which serves no HTTP.
ENTRYPOINT ["kubeflow-bot"]
CMD ["serve"]
