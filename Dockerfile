# kubeflow-bot image: the Slack app (`kubeflow-bot serve`, the default) and the Pub/Sub
# worker (`docker run IMAGE worker`) from one image.
#
# Stages:
#   requirements  pyproject.toml -> requirements.txt ([project].dependencies only)
#   build         a virtualenv in /opt/venv: dependencies first (a layer that stays cached
#                 while only the source changes), then the project itself with --no-deps
#   runtime       the virtualenv, the default policy and a non-root user; no build tools
#
# A later stage will render the pinned Kubeflow manifests at build time and point
# KUBEFLOW_BOT_MANIFESTS at the bundle; it is not here yet.
#
# Nothing is fetched from the network except by pip (PyPI, or the index pip is configured
# with): no apt, no curl, no ADD of URLs.

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

# --- runtime ---------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

# PORT: App Engine flexible sends traffic to 8080 (and sets PORT=8080 itself); other
# hosts may override it. KUBEFLOW_BOT_POLICY: the sample policy copied below is only a
# default; operators mount their own file over /app/policy.yaml or point the variable
# elsewhere.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:$PATH" \
    PORT=8080 \
    KUBEFLOW_BOT_POLICY=/app/policy.yaml

# A fixed uid/gid so that Kubernetes' runAsNonRoot can verify it. Its home, /app, is the
# working directory and the only place it may write (the embedded SQLite store, when no
# other store is configured).
RUN groupadd --system --gid 10001 kubeflow-bot \
    && useradd --system --no-log-init --uid 10001 --gid kubeflow-bot \
        --home-dir /app --create-home --shell /usr/sbin/nologin kubeflow-bot

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY policy.example.yaml /app/policy.yaml

USER 10001:10001
EXPOSE 8080

# No HEALTHCHECK: App Engine probes /healthz itself (app.yaml), and the same image runs
# the worker, which serves no HTTP.
ENTRYPOINT ["kubeflow-bot"]
CMD ["serve"]
