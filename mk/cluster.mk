# Cluster targets, included by the top-level Makefile (which defines PY, VENV, STAMP and `compile`).
#
#   make images                         build + push the stage images and the MLflow server image
#   make images PUSH=0                  build only
#   make images SIGNPOSE_REGISTRY=ghcr.io/acme SIGNPOSE_IMAGE_TAG=0.2.0
#   make lint                           ruff + structure rules, hadolint, chart render + schema validation, yamllint
#
# Image names come from signpose/deploy/images.py, which reads images.env; SIGNPOSE_REGISTRY and
# SIGNPOSE_IMAGE_TAG given on the command line or in the environment win, for the build and for the
# pipeline compiled alongside it (`compile` runs first: the preprocessing image carries its output).

DOCKER ?= docker
PUSH ?= 1
DOCKER_BUILD_ARGS ?=
GIT_REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

ifdef SIGNPOSE_REGISTRY
export SIGNPOSE_REGISTRY
endif
ifdef SIGNPOSE_IMAGE_TAG
export SIGNPOSE_IMAGE_TAG
endif

.PHONY: images lint lint-python lint-docker lint-chart lint-yaml

images: $(STAMP) compile
	@$(PY) -m signpose.deploy.images >/dev/null
	@if ! command -v $(DOCKER) >/dev/null 2>&1 || ! $(DOCKER) info >/dev/null 2>&1; then \
		echo "make images: no Docker engine reachable ('$(DOCKER) info' failed): nothing built or pushed."; \
		echo "On a machine with Docker, the same command builds and pushes:"; \
		$(PY) -m signpose.deploy.images | sed 's/^/  /'; \
		exit 0; \
	fi; \
	set -e; \
	eval "$$($(PY) -m signpose.deploy.images)"; \
	created="$$(date -u +%Y-%m-%dT%H:%M:%SZ)"; \
	for pair in "preprocess=$$PREPROCESS_IMAGE" "train=$$TRAIN_IMAGE" "mlflow=$$MLFLOW_IMAGE"; do \
		stage="$${pair%%=*}"; ref="$${pair#*=}"; \
		echo "==> building $$ref from docker/Dockerfile.$$stage"; \
		$(DOCKER) build -f "docker/Dockerfile.$$stage" -t "$$ref" \
			--build-arg VERSION="$${ref##*:}" --build-arg REVISION="$(GIT_REVISION)" \
			--build-arg CREATED="$$created" $(DOCKER_BUILD_ARGS) . ; \
		if [ "$(PUSH)" = "1" ]; then echo "==> pushing $$ref"; $(DOCKER) push "$$ref"; fi; \
	done

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
