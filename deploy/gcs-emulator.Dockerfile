# Local Google Cloud Storage emulator for deploy/compose.yaml (never deployed).
# gcp-storage-emulator is a test dependency, not part of the job image, so it gets its own
# small image, pinned to the same version as requirements-dev.txt (a test checks they match).
FROM python:3.11.13-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install --no-cache-dir gcp-storage-emulator==2026.7.19

# Objects live under /data/.cloudstorage; compose mounts a named volume there, which Docker
# initialises with this ownership, so the non-root user can write it.
RUN useradd --system --uid 10002 --no-create-home --shell /usr/sbin/nologin emulator \
    && mkdir /data && chown emulator /data
WORKDIR /data
USER 10002

EXPOSE 9023
ENTRYPOINT ["gcp-storage-emulator"]
CMD ["--data-dir", "/data", "start", "--host", "0.0.0.0", "--port", "9023", "--default-bucket", "local-conversions"]
