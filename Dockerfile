# Image of the Involve Asia conversions job, run by Cloud Run jobs as `python -m app`.
# Build: docker build -t involve-asia-job .   (Cloud Build does this in cloudbuild.yaml)
# Nothing secret is ever baked in: the API secret reaches the container at run time from
# Secret Manager (job.yaml, secretKeyRef), GCS credentials from the job's service account.

# Pinned patch release of the slim Debian image; bump deliberately (and rerun the tests).
FROM python:3.11.13-slim-bookworm

# PYTHONUNBUFFERED: logs reach Cloud Logging line by line instead of in 8 KB blocks,
#   so a working job never looks stuck and nothing is lost when the task ends.
# PYTHONDONTWRITEBYTECODE: the code directory is read-only for the runtime user anyway.
# PIP_*: no wheel cache left in the layer, no version-check call home during the build.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# Then the code (tests, deploy files and local output are kept out by .dockerignore).
COPY app ./app

# A non-root user with no login shell. It owns /app itself (so OUTPUT_DIR=./output and the
# demo can create their folders there) but not the code, which stays root-owned.
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin job \
    && chown job /app
USER 10001

# Exec form: Python is PID 1 and receives SIGTERM directly (no shell in between).
ENTRYPOINT ["python", "-m", "app"]
