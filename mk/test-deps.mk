# Test dependencies from Debian, included by the top-level Makefile: `make test` and `make test-all`
# first install Debian's PostgreSQL server where it is missing and this machine can (root and
# apt-get). tests/test_chart_database.py verifies the chart's sslmode=verify-full against it (pgserver's
# PostgreSQL, from PyPI, is built without TLS); without it that test skips and says why.
.PHONY: test-deps
test test-all: test-deps

test-deps:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's postgresql (the TLS database server of tests/test_chart_database.py)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-get install -y --no-install-recommends postgresql >/dev/null 2>&1 \
		  || { apt-get update >/dev/null && apt-get install -y --no-install-recommends postgresql >/dev/null; }; } \
		|| echo "apt-get install postgresql failed: the TLS database test will skip"; \
	else \
		echo "no Debian PostgreSQL server (/usr/lib/postgresql/*/bin) and no root apt-get: the TLS database test will skip"; \
	fi
