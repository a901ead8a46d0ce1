# syntax=docker/dockerfile:1.7
# The disclosure gateway: one image for every role (stream worker, ledger sink, review page,
# agent consumer, publisher, auditor, key set-up, and the Kafka set-up run as
# `python -m gateway.kafka.provision`); the compose file picks the role by command.
#
# Nothing secret is in the image: keys, the database password, the reviewer password and
# the Kafka passwords and CA are mounted at run time (files) and read through NAME_FILE
# variables (see the entrypoint): GATEWAY_SASL_PASSWORD_FILE becomes GATEWAY_SASL_PASSWORD.

FROM python:3.11-slim AS build
WORKDIR /src
# Only what the package needs: .dockerignore keeps keys, ledgers and venvs out.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY schemas ./schemas
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --home-dir /var/lib/gateway --create-home gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# The default policy; deployments mount their own over it (a compose config).
COPY agents.yaml /etc/gateway/agents.yaml

# NAME_FILE=/path sets NAME to the file's content (trailing newlines dropped) for the
# gateway's settings (GATEWAY_*) and libpq (PGPASSWORD): secrets arrive as files and never
# appear in the compose file, the image or `docker inspect`.
COPY <<'EOF' /usr/local/bin/gateway-entrypoint
#!/bin/sh
set -eu
for name in $(env | awk -F= '/^(GATEWAY_[A-Z0-9_]+|PGPASSWORD)_FILE=/ {print $1}'); do
    file=$(printenv "$name")
    target=${name%_FILE}
    if ! value=$(cat "$file"); then
        echo "error: cannot read $file (from $name)" >&2
        exit 2
    fi
    export "$target=$value"
    unset "$name"
done
exec gateway "$@"
EOF
RUN chmod 0755 /usr/local/bin/gateway-entrypoint

USER gateway
WORKDIR /var/lib/gateway
ENV GATEWAY_POLICY_PATH=/etc/gateway/agents.yaml \
    GATEWAY_KEYS_DIR=/run/gateway/keys
# 6066: worker health and Prometheus metrics; 8080: the review page.
EXPOSE 6066 8080
ENTRYPOINT ["gateway-entrypoint"]
CMD ["--help"]
