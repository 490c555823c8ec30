# solopool: Stratum V1 solo-mining pool for your own Bitcoin node.
#   docker build -t solopool .
#   docker run -e SOLOPOOL_NODE_RPC_URL=http://NODE:8332 -e SOLOPOOL_NODE_RPC_USER=... \
#       -e SOLOPOOL_NODE_RPC_PASSWORD=... -v solopool-data:/data -p 3333:3333 -p 8080:8080 solopool
# or with a config file: -v "$PWD/config:/config:ro" ... solopool --config /config/solopool.toml
# Every config key can be given as SOLOPOOL_<SECTION>_<KEY> (they win over the file).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --system --uid 1000 --user-group --home-dir /data --shell /usr/sbin/nologin solopool \
    && mkdir -p /data /config \
    && chown solopool:solopool /data
# Dependencies first, in their own layer: rebuilt only when pyproject.toml changes, not on every
# source edit. The list is read from pyproject.toml's [project] dependencies (written once).
# All of them ship wheels (amd64 and arm64): no compiler in the image.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > requirements.txt
RUN pip install -r requirements.txt
# Then the product itself, without touching the dependencies installed above.
COPY README.md ./
COPY pool ./pool
RUN pip install --no-deps . \
    && rm -rf /app/build /app/*.egg-info

# In the container the state lives in the /data volume and the dashboard/API must be reachable
# from outside the container; miners connect to 3333 (and 3334 with [stratum] tls_port).
ENV SOLOPOOL_POOL_DATA_DIR=/data \
    SOLOPOOL_API_HOST=0.0.0.0

USER solopool
VOLUME ["/data"]
EXPOSE 3333 3334 8080
# Is the Stratum port accepting connections? (follows SOLOPOOL_STRATUM_PORT when set)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ.get('SOLOPOOL_STRATUM_PORT', '3333'))), 3).close()"]
ENTRYPOINT ["solopool"]
# Without --config (or with no /config/solopool.toml mounted), use `run`: SOLOPOOL_* only.
CMD ["--config", "/config/solopool.toml"]
