# dejavu command line in a container.
#   docker build -t dejavu .
#   docker run --rm -v "$PWD/music:/music:ro" -e DEJAVU_DATABASE_URL=... dejavu --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ffmpeg decodes audio files (mpg123 decodes MP3 2.4x cheaper); the -dev packages, pkg-config and gcc build
# PyAudio (portaudio), psycopg2 (libpq) and mysqlclient (libmariadb) from source.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        ffmpeg mpg123 portaudio19-dev libpq-dev libmariadb-dev pkg-config gcc \
 && rm -rf /var/lib/apt/lists/*

# Optional features of the package to install (see [project.optional-dependencies] in pyproject.toml).
ARG EXTRAS=postgres,mysql,mic

WORKDIR /src
COPY . /src
RUN pip install "/src[${EXTRAS}]"

RUN useradd --system --create-home --home-dir /home/dejavu dejavu
USER dejavu
WORKDIR /home/dejavu

# Healthy: the CLI starts, ffmpeg is there and the configured store answers (for long-running
# commands such as --monitor; the service's compose entry checks /healthz instead).
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ffmpeg -version >/dev/null && dejavu --stats >/dev/null || exit 1

ENTRYPOINT ["dejavu"]
CMD ["--help"]
