# The blocklist-sync image the Kubernetes manifests in cron/ run. Build it from a checkout:
#   docker build -t registry.example.com/kaleyra-blocklist-sync:0.1.0 .
#   docker push registry.example.com/kaleyra-blocklist-sync:0.1.0
# (use your registry's name, and the same in cron/kubernetes-*.yaml).
# `docker run --rm IMAGE check` tests a configuration; `docker run --rm IMAGE run` sweeps.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The package from this checkout (its migrations included), into the image's Python.
COPY pyproject.toml README.md /src/
COPY sync /src/sync
COPY migrations /src/migrations
RUN pip install /src && rm -rf /src

# Non-root, with the uid/gid the manifests' securityContext expects (runAsUser: 10001).
RUN groupadd --system --gid 10001 blocklist-sync \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin blocklist-sync
USER 10001:10001
WORKDIR /tmp

ENTRYPOINT ["blocklist-sync"]
CMD ["--help"]
