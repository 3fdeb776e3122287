#!/usr/bin/env bash
# Local stand-ins for the stage images' base images, for machines that reach no image registry
# (`make base-images`). They are NOT the bases the Dockerfiles name by default and are never pushed:
#
#   localhost/signpose-standin/python:3.11-slim
#       Debian 12 bookworm (minbase) from Debian's packages via mmdebstrap, Python 3.11 in a venv at
#       /opt/venv whose bin/ comes first on PATH, so `python`, `python3` and `pip` answer as in the
#       official python:3.11-slim-bookworm (which has Python 3.11.x in /usr/local).
#   localhost/signpose-standin/pytorch:<torch>-cpu-runtime
#       the above plus the lock's torch pin as the CPU wheel from a local wheel folder, standing in for
#       pytorch/pytorch:<torch>-cuda*-cudnn9-runtime (no CUDA: see docs/deploy.md, "Images built here").
#
# Usage: docker/standin/build-bases.sh WHEEL_DIR     (WHEEL_DIR holds torch-<pin>+cpu-*.whl)
# Environment: BUILD_CA_BUNDLE (a CA bundle mounted for the build only, never copied into an image).
set -euo pipefail

PYTHON_STANDIN=${PYTHON_STANDIN:-localhost/signpose-standin/python:3.11-slim}
wheels=${1:?usage: $0 WHEEL_DIR (the folder holding the CPU torch wheel)}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
torch_pin=$(sed -n 's/^torch==//p' "$root/requirements.lock")
PYTORCH_STANDIN=${PYTORCH_STANDIN:-localhost/signpose-standin/pytorch:${torch_pin}-cpu-runtime}

die() { echo "make base-images: $*" >&2; exit 2; }
[ -n "$torch_pin" ] || die "requirements.lock has no torch==VERSION pin"
compgen -G "$wheels/torch-${torch_pin}+cpu-*.whl" >/dev/null \
    || die "no torch-${torch_pin}+cpu wheel in '$wheels': set TORCH_WHEELS to a folder holding it"
for tool in buildah mmdebstrap; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install $tool)"
done

if buildah inspect --type image "$PYTHON_STANDIN" >/dev/null 2>&1; then
    echo "==> $PYTHON_STANDIN exists (buildah rmi it to rebuild)"
else
    echo "==> building $PYTHON_STANDIN from Debian bookworm (mmdebstrap)"
    ctr=$(buildah from scratch)
    trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
    rootfs=$(buildah mount "$ctr")
    # minbase: essential + apt; python3-venv for /opt/venv; the cleanup keeps the image slim (no docs,
    # no apt lists, no bytecode caches), as the official slim image does.
    mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        --customize-hook='chroot "$1" python3 -m venv /opt/venv' \
        --customize-hook='printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" > "$1/opt/venv/pip.conf"' \
        --customize-hook='rm -rf "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/info/* "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        --customize-hook='find "$1" -xdev -name __pycache__ -type d -prune -exec rm -rf {} +' \
        bookworm "$rootfs" \
        "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian bookworm-updates main" \
        "deb http://deb.debian.org/debian-security bookworm-security main"
    buildah umount "$ctr" >/dev/null
    # pip.conf above points the venv's pip (23.0, which defaults to its own certifi bundle) at the
    # system store, as current pip does (truststore): a build that mounts a CA bundle there is trusted.
    buildah config --env PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 \
        --label org.opencontainers.image.title=signpose-standin-python \
        --label org.opencontainers.image.description="LOCAL STAND-IN for python:3.11-slim-bookworm (Debian packages, mmdebstrap); never push" \
        "$ctr"
    buildah commit --rm "$ctr" "$PYTHON_STANDIN" >/dev/null
    trap - EXIT
fi

if buildah inspect --type image "$PYTORCH_STANDIN" >/dev/null 2>&1; then
    echo "==> $PYTORCH_STANDIN exists (buildah rmi it to rebuild)"
else
    echo "==> building $PYTORCH_STANDIN (CPU torch $torch_pin from $wheels)"
    ca=()
    if [ -n "${BUILD_CA_BUNDLE:-}" ]; then ca=(-v "$BUILD_CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro"); fi
    buildah bud --isolation chroot --format docker --layers \
        -f "$here/Dockerfile.pytorch-cpu" -t "$PYTORCH_STANDIN" \
        --build-arg PYTHON_IMAGE="$PYTHON_STANDIN" --build-arg TORCH_VERSION="$torch_pin" \
        -v "$(cd "$wheels" && pwd):/wheels:ro" "${ca[@]}" "$root"
fi
