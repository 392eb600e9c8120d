# syntax=docker/dockerfile:1
# mcpgw, the MCP gateway, as an image: `docker build -t mcpgw .` then see deploy/docker-compose.yml.
# (Written with care but not built here: the machine this project is developed on runs no Docker engine.)

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY mcpgw ./mcpgw
COPY adapter ./adapter
COPY converter ./converter
COPY gateway ./gateway
COPY registry ./registry
COPY remote ./remote
COPY fixtures/nacos-configs/demo ./fixtures/nacos-configs/demo
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="mcpgw" \
      org.opencontainers.image.description="An MCP gateway driven by Nacos MCP-registry configuration" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN useradd --system --uid 10001 --home-dir /var/lib/mcpgw --create-home mcpgw
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER mcpgw
WORKDIR /var/lib/mcpgw
# Inside a container the gateway must listen on every interface to be reachable; logs are JSON lines.
ENV MCPGW_HOST=0.0.0.0 \
    MCPGW_PORT=8080 \
    MCPGW_LOG_FORMAT=json \
    MCPGW_STATE_DIR=/var/lib/mcpgw/state \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["mcpgw"]
# With no source the bundled demo is served (its demo backend included); the compose file gives --nacos.
CMD ["serve"]
