# The blocklist-sync image the Kubernetes manifests in cron/ run. Build it from a checkout:
#   docker build -t registry.example.com/kaleyra-blocklist-sync:0.3.0 .
#   docker push registry.example.com/kaleyra-blocklist-sync:0.3.0
# (use your registry's name, and the same in cron/kubernetes-*.yaml).
# `docker run --rm IMAGE check` tests a configuration; `docker run --rm IMAGE run` sweeps.
#
# Reproducible: the base is an exact Python release (pin its digest too where your registry
# can resolve one: python:3.11.14-slim-bookworm@sha256:...), the dependencies are exactly
# those of requirements.lock, each checked against its hashes (`pip --require-hashes`), and
# the package is the wheel built in the first stage, installed without resolving anything.
# requirements.lock is made from pyproject.toml by pip-tools (docs/operators.md#the-image); the test
# suite checks that the two agree.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: the wheel, from this checkout (its migrations included) ------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sync sync
COPY migrations migrations
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- the image: the locked dependencies, then the wheel ------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.3.0
LABEL org.opencontainers.image.title="kaleyra-blocklist-sync" \
      org.opencontainers.image.description="Sync Kaleyra blocklists (sms, whatsapp, voice) into PostgreSQL with a truthful history of additions and removals." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes --no-deps -r /tmp/requirements.lock && rm /tmp/requirements.lock
COPY --from=build /wheels/ /tmp/wheels/
RUN pip install --no-deps --no-index /tmp/wheels/*.whl && rm -rf /tmp/wheels

# Non-root, with the uid/gid the manifests' securityContext expects (runAsUser: 10001).
RUN groupadd --system --gid 10001 blocklist-sync \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin blocklist-sync
USER 10001:10001
WORKDIR /tmp

ENTRYPOINT ["blocklist-sync"]
CMD ["--help"]
