# solopool: Stratum V1 solo-mining pool for your own Bitcoin node.
#   docker build -t solopool .
#   docker run -v $PWD/config:/config -v solopool-data:/data -p 3333:3333 solopool
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY pool ./pool
RUN pip install . \
    && useradd --system --uid 1000 --home-dir /data --shell /usr/sbin/nologin solopool \
    && mkdir -p /data /config \
    && chown solopool:solopool /data

USER solopool
VOLUME ["/data"]
EXPOSE 3333
# Is the Stratum port accepting connections?
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import socket; socket.create_connection(('127.0.0.1', 3333), 3).close()"
ENTRYPOINT ["solopool"]
CMD ["--config", "/config/solopool.toml"]
