#!/usr/bin/env bash
# Build (and push) the stage images and the MLflow server image: `make images` runs this with the names
# from signpose.deploy.images. One argument per image: STAGE=REF, built from docker/Dockerfile.STAGE.
#
# Engine: Docker when an engine answers `$DOCKER info`, else buildah (Debian's; installed with apt-get
# when missing and we are root), chroot isolation, Docker image format (so SHELL is honoured), layer cache
# on. ENGINE=docker|buildah forces one. Same Dockerfiles, build arguments, labels and tags either way.
#
# Environment (set by mk/cluster.mk): DOCKER, ENGINE, PUSH (1 pushes), REVISION, DOCKER_BUILD_ARGS,
# STANDIN (1: build on the local stand-in bases of `make base-images`; buildah only, never pushed),
# TORCH_WHEELS (STANDIN: the folder holding the CPU torch wheel, mounted for the build only),
# BUILD_CA_BUNDLE (buildah: a CA bundle mounted over the system one for the build only, never copied in).
set -euo pipefail

die() { echo "make images: $*" >&2; exit 2; }
DOCKER=${DOCKER:-docker}
PUSH=${PUSH:-1}
STANDIN=${STANDIN:-0}

if [ -z "${ENGINE:-}" ]; then
    if command -v "$DOCKER" >/dev/null 2>&1 && "$DOCKER" info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=buildah; fi
fi
if [ "$ENGINE" = buildah ] && ! command -v buildah >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> no Docker engine answers and buildah is missing: apt-get install buildah"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah >/dev/null; }
    else
        die "no Docker engine answers ('$DOCKER info') and buildah is not installed: install either"
    fi
fi
case "$ENGINE" in docker | buildah) ;; *) die "ENGINE=$ENGINE: expected docker or buildah" ;; esac

extra=()
if [ "$STANDIN" = 1 ]; then
    [ "$PUSH" = 1 ] && die "STANDIN=1 builds on local stand-in bases, which must never be pushed: add PUSH=0"
    [ "$ENGINE" = buildah ] || die "STANDIN=1 mounts the local torch wheel folder, which needs buildah (ENGINE=buildah)"
    [ -d "${TORCH_WHEELS:-}" ] || die "STANDIN=1: TORCH_WHEELS='${TORCH_WHEELS:-}' is not a folder (the one holding the CPU torch wheel)"
    torch_pin=$(sed -n 's/^torch==//p' requirements.lock)
    for base in localhost/signpose-standin/python:3.11-slim "localhost/signpose-standin/pytorch:${torch_pin}-cpu-runtime"; do
        buildah inspect --type image "$base" >/dev/null 2>&1 || die "STANDIN=1: $base is missing: run \`make base-images\` first"
    done
    extra=(--build-arg PYTHON_IMAGE=localhost/signpose-standin/python:3.11-slim
           --build-arg "PYTORCH_IMAGE=localhost/signpose-standin/pytorch:${torch_pin}-cpu-runtime"
           --build-arg TORCH_INDEX_URL= --build-arg TORCH_FIND_LINKS=/wheels
           -v "$(cd "$TORCH_WHEELS" && pwd):/wheels:ro")
fi
if [ "$ENGINE" = buildah ]; then
    build=(buildah bud --isolation chroot --format docker --layers)
    if [ -n "${BUILD_CA_BUNDLE:-}" ]; then build+=(-v "$BUILD_CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro"); fi
    push=(buildah push)
else
    build=("$DOCKER" build)
    push=("$DOCKER" push)
fi

created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for pair in "$@"; do
    stage=${pair%%=*}
    ref=${pair#*=}
    echo "==> building $ref from docker/Dockerfile.$stage ($ENGINE)"
    # shellcheck disable=SC2086 # DOCKER_BUILD_ARGS is a list of words by design
    "${build[@]}" -f "docker/Dockerfile.$stage" -t "$ref" \
        --build-arg VERSION="${ref##*:}" --build-arg REVISION="${REVISION:-unknown}" \
        --build-arg CREATED="$created" "${extra[@]}" ${DOCKER_BUILD_ARGS:-} .
    if [ "$PUSH" = 1 ]; then
        echo "==> pushing $ref"
        "${push[@]}" "$ref"
    fi
done
