# Cluster targets, included by the top-level Makefile (which defines PY, VENV, STAMP and `compile`).
#
#   make images                         build + push the stage images and the MLflow server image
#                                       (Docker when an engine answers, else buildah: docker/images.sh)
#   make images PUSH=0                  build only
#   make base-images                    local stand-in base images (no registry reachable), buildah
#   make images PUSH=0 STANDIN=1        build on those stand-ins (never pushed)
#   make image-test                     the two above, then the image tests (slow: minutes)
#   make images SIGNPOSE_REGISTRY=ghcr.io/acme SIGNPOSE_IMAGE_TAG=0.2.0
#   make lint                           ruff + structure rules, hadolint, chart render + schema validation, yamllint
#
# Image names come from signpose/deploy/images.py, which reads images.env; SIGNPOSE_REGISTRY and
# SIGNPOSE_IMAGE_TAG given on the command line or in the environment win, for the build and for the
# pipeline compiled alongside it (`compile` runs first: the preprocessing image carries its output).

DOCKER ?= docker
PUSH ?= 1
DOCKER_BUILD_ARGS ?=
# docker | buildah; empty: Docker when an engine answers `$(DOCKER) info`, else buildah.
ENGINE ?=
# 1: build on the local stand-in bases (`make base-images`); buildah only, PUSH=0 only.
STANDIN ?= 0
# The folder holding the lock's CPU torch wheel, for the stand-in bases and STANDIN=1 (pip's find-links here).
TORCH_WHEELS ?= $(shell $(PY) -m pip config get global.find-links 2>/dev/null)
# buildah: a CA bundle mounted over the image's for the build only (a TLS-inspecting gateway), never copied in.
BUILD_CA_BUNDLE ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
GIT_REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
IMAGE_ENV = DOCKER="$(DOCKER)" ENGINE="$(ENGINE)" PUSH="$(PUSH)" STANDIN="$(STANDIN)" REVISION="$(GIT_REVISION)" \
	DOCKER_BUILD_ARGS="$(DOCKER_BUILD_ARGS)" TORCH_WHEELS="$(TORCH_WHEELS)" BUILD_CA_BUNDLE="$(BUILD_CA_BUNDLE)"

ifdef SIGNPOSE_REGISTRY
export SIGNPOSE_REGISTRY
endif
ifdef SIGNPOSE_IMAGE_TAG
export SIGNPOSE_IMAGE_TAG
endif

.PHONY: images base-images image-test lint lint-python lint-docker lint-chart lint-yaml

images: $(STAMP) compile
	@$(PY) -m signpose.deploy.images >/dev/null
	@eval "$$($(PY) -m signpose.deploy.images)"; \
	$(IMAGE_ENV) docker/images.sh "preprocess=$$PREPROCESS_IMAGE" "train=$$TRAIN_IMAGE" "mlflow=$$MLFLOW_IMAGE"

# Local stand-ins for python:3.11-slim-bookworm and the PyTorch runtime image (CPU torch), for a machine
# that reaches no registry: localhost/signpose-standin/*, never pushed (docs/deploy.md, "Images built here").
base-images:
	@command -v buildah >/dev/null && command -v mmdebstrap >/dev/null || \
		{ echo "==> apt-get install buildah mmdebstrap"; DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah mmdebstrap >/dev/null; }
	BUILD_CA_BUNDLE="$(BUILD_CA_BUNDLE)" docker/standin/build-bases.sh "$(TORCH_WHEELS)"

# Build the three images on the stand-in bases (cached layers are reused) and run the image tests in them:
# each image checked from inside, the compiled pipeline's tasks and the chart's MLflow pod run in their
# images (tests/test_images*.py; docs/deploy.md, "Images built here").
IMAGE_TESTS := tests/test_images.py tests/test_images_pipeline.py tests/test_images_mlflow_chart.py
image-test: $(STAMP)
	$(MAKE) base-images
	$(MAKE) images PUSH=0 STANDIN=1
	$(PY) -m pytest -q -m slow --durations=10 $(IMAGE_TESTS)

lint: lint-python lint-docker lint-chart lint-yaml

# ruff (pyflakes, import order, bugbear) gates; complexity is reported, not gated; then the structure rules.
lint-python: $(STAMP)
	$(VENV)/bin/ruff check .
	@echo "complexity (C901, reported, not gated):"
	$(VENV)/bin/ruff check --select C901 --exit-zero --statistics .
	$(PY) -m tools.structure

lint-docker: $(STAMP)
	$(VENV)/bin/hadolint --failure-threshold style docker/Dockerfile.preprocess docker/Dockerfile.train docker/Dockerfile.mlflow

lint-chart: $(STAMP)
	$(PY) -m tools.chartcheck charts/signpose -f charts/signpose/ci/production-values.yaml

lint-yaml: $(STAMP)
	$(VENV)/bin/yamllint --strict -c mk/yamllint.yaml charts/signpose/Chart.yaml charts/signpose/values.yaml charts/signpose/ci
