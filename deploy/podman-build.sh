#!/usr/bin/env bash
# Build the job image for real with podman on a Debian bookworm machine that has no Docker and
# cannot pull from container registries (a sandbox reaching only the package registries), then
# try it: --help, --demo, the non-root user, SIGTERM, and deploy/compose.yaml.
#
#   sudo deploy/podman-build.sh            # as root: it installs packages with apt
#
# Not part of CI (it needs root, apt and a few minutes). What it does:
#   1. apt-get installs podman, runc, debootstrap, podman-compose from Debian's packages;
#   2. makes a stand-in for the Dockerfile's base image: a minimal bookworm root filesystem
#      (debootstrap --variant=minbase) with Debian's Python 3.11, pip and CA certificates,
#      python3.11 / python3 / python / pip linked in /usr/local/bin as in the official image,
#      and pip allowed to install into it (the official image has no EXTERNALLY-MANAGED
#      marker); imported under the FROM name (python:3.11.13-slim-bookworm), so the unmodified
#      Dockerfile builds without pulling anything;
#   3. podman build --runtime runc with raised ulimits and the host's CA bundle mounted for the
#      RUN steps (pip reaches PyPI through the machine's TLS setup), --pull=never;
#   4. runs the image: --help, --demo, `id -u` must be the image's non-root user, a running
#      container must stop within 10 s of SIGTERM;
#   5. podman-compose -f deploy/compose.yaml up --exit-code-from job, then down.
# Every step prints what it checks; the script stops at the first failure. (catatonit is the
# init that compose.yaml's `init: true` starts as PID 1; podman looks for it on the host. The
# dnsname CNI plugin lets compose services find each other by name: without it the job cannot
# resolve `gcs` or `simulator`.)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE_TAG=${BASE_TAG:-$(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$REPO_ROOT/Dockerfile" | head -n 1)}
IMAGE=${IMAGE:-localhost/involve-asia-job:local}
ROOTFS=${ROOTFS:-/var/tmp/involve-asia-bookworm-rootfs}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What this sandbox needs, for builds and runs alike: runc, and explicit ulimits (without them
# the runtime fails "error setting rlimit type 7: operation not permitted": the defaults podman
# asks for exceed the sandbox's hard limits).
RUNTIME=(--runtime runc)
ULIMITS=(--ulimit nofile=10000:10000 --ulimit nproc=10000:10000)
CERTS=(-v /etc/ssl/certs:/etc/ssl/certs:ro)

say() { printf '\n== %s\n' "$*"; }
die() { echo "FAILED: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (apt-get, debootstrap and rootful podman)"
[ -n "$BASE_TAG" ] || die "no FROM line in $REPO_ROOT/Dockerfile"

say "Installing podman, runc, debootstrap, podman-compose (apt)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends podman runc debootstrap podman-compose \
    ca-certificates uidmap slirp4netns fuse-overlayfs catatonit \
    golang-github-containernetworking-plugin-dnsname >/dev/null
podman --version
runc --version | head -n 1
podman-compose --version 2>/dev/null | tail -n 1 || true

say "Base image stand-in $BASE_TAG"
if podman image exists "$BASE_TAG"; then
    echo "already imported"
else
    if [ ! -x "$ROOTFS/usr/bin/python3.11" ]; then
        rm -rf "$ROOTFS"
        debootstrap --variant=minbase \
            --include=python3,python3-pip,python3-venv,ca-certificates \
            bookworm "$ROOTFS" "$DEBIAN_MIRROR" >/dev/null
    fi
    ln -sf /usr/bin/python3.11 "$ROOTFS/usr/local/bin/python3.11"
    ln -sf /usr/bin/python3.11 "$ROOTFS/usr/local/bin/python3"
    ln -sf /usr/bin/python3.11 "$ROOTFS/usr/local/bin/python"
    ln -sf /usr/bin/pip3 "$ROOTFS/usr/local/bin/pip"
    rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    tar -C "$ROOTFS" -c . | podman import \
        --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' - "$BASE_TAG" >/dev/null
    podman tag "$BASE_TAG" "docker.io/library/$BASE_TAG"
fi
podman run --rm "${RUNTIME[@]}" "${ULIMITS[@]}" "$BASE_TAG" python --version

say "podman build (the unmodified Dockerfile) -> $IMAGE"
podman build "${RUNTIME[@]}" "${ULIMITS[@]}" "${CERTS[@]}" --pull=never \
    -t "$IMAGE" -f "$REPO_ROOT/Dockerfile" "$REPO_ROOT"

say "--help"
podman run --rm "${RUNTIME[@]}" "${ULIMITS[@]}" "$IMAGE" --help | head -n 5

say "--demo"
podman run --rm "${RUNTIME[@]}" "${ULIMITS[@]}" -e LOG_LANGUAGE=en "$IMAGE" --demo | tail -n 4

say "non-root user"
uid=$(podman run --rm "${RUNTIME[@]}" "${ULIMITS[@]}" --entrypoint id "$IMAGE" -u)
expected=$(sed -n 's/^USER \([0-9]*\).*/\1/p' "$REPO_ROOT/Dockerfile" | tail -n 1)
echo "id -u: $uid (Dockerfile USER $expected)"
[ "$uid" = "$expected" ] && [ "$uid" != 0 ] || die "the container runs as uid $uid"

say "SIGTERM stops a running container within 10 s"
# stop_within_10s NAME CONTAINER_ID: SIGTERM (podman stop), then the exit code and the time taken.
stop_within_10s() {
    local name=$1 cid=$2 start elapsed code
    start=$(date +%s)
    podman stop --time 10 "$cid" >/dev/null
    elapsed=$(( $(date +%s) - start ))
    code=$(podman inspect --format '{{.State.ExitCode}}' "$cid")
    podman logs "$cid" 2>&1 | grep -E '"event": ?"run_finished"' | tail -n 1 || true
    podman rm "$cid" >/dev/null
    echo "$name: stopped ${elapsed}s after SIGTERM, exit code $code"
    [ "$elapsed" -lt 10 ] || die "$name needed the whole 10 s grace period (then SIGKILL)"
}
# The bundled simulator (made-up credentials, as in compose.yaml) on the host network, and the
# job fetching a month from it at 60 requests/minute: minutes of work, stopped after 5 s.
sid=$(podman run -d "${RUNTIME[@]}" "${ULIMITS[@]}" --network host --entrypoint python "$IMAGE" \
    -m app.simulator --host=127.0.0.1 --port=18080 --key=general \
    --secret=local-made-up-secret --records-per-day=300)
sleep 2
jid=$(podman run -d "${RUNTIME[@]}" "${ULIMITS[@]}" --network host -e LOG_FORMAT=json -e LOG_LANGUAGE=en \
    -e INVOLVE_ASIA_BASE_URL=http://127.0.0.1:18080/api -e INVOLVE_ASIA_API_KEY=general \
    -e INVOLVE_ASIA_API_SECRET=local-made-up-secret \
    -e START_DATE=2025-01-01 -e END_DATE=2025-01-31 "$IMAGE")
sleep 5
[ "$(podman inspect --format '{{.State.Running}}' "$jid")" = "true" ] \
    || die "the job container ended before SIGTERM: $(podman logs "$jid" 2>&1 | tail -n 3)"
stop_within_10s "job container (fetching 2025-01)" "$jid"
stop_within_10s "simulator container" "$sid"

say "podman-compose -f deploy/compose.yaml up --exit-code-from job"
compose=(podman-compose --podman-run-args="${RUNTIME[*]} ${ULIMITS[*]}"
         --podman-build-args="${RUNTIME[*]} ${ULIMITS[*]} ${CERTS[*]} --pull=never"
         -f "$REPO_ROOT/deploy/compose.yaml")
# A network left by an earlier run may predate the dnsname plugin: start from a clean slate.
# (podman-compose 1.0 names the project after the folder, `deploy`; newer ones use `name:`.)
"${compose[@]}" down --volumes >/dev/null 2>&1 || true
for project in deploy involve-asia-local; do
    podman network rm -f "${project}_default" >/dev/null 2>&1 || true
done
rc=0
"${compose[@]}" up --build --exit-code-from job >"${TMPDIR:-/tmp}/podman-compose-up.log" 2>&1 \
    || rc=$?
grep -E '"event": ?"(run_finished|summary_written)"' "${TMPDIR:-/tmp}/podman-compose-up.log" \
    | tail -n 2 || true
echo "podman-compose up exit code: $rc (full log: ${TMPDIR:-/tmp}/podman-compose-up.log)"
start=$(date +%s)
"${compose[@]}" down --volumes >/dev/null 2>&1 || true
echo "podman-compose down: $(( $(date +%s) - start ))s"
[ "$rc" -eq 0 ] || die "the compose run exited $rc"

say "All checks passed"
