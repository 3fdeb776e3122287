"""``signpose submit`` and ``signpose schedule``: the compiled pipeline on Kubeflow Pipelines.

    signpose submit   --host http://localhost:8080 [--param skeleton_epochs=50 ...] [--run_name NAME]
    signpose schedule --host http://localhost:8080 --cron "0 0 3 * * 1" [--replace]

The work (package, parameters, client, run, recurring run) is signpose/deploy/submit.py; this module
is the command line over it. Every problem the user can fix (no host, an unknown or mistyped
parameter, a bad cron, a KFP API that does not answer or refuses the token) is a
:class:`~signpose.deploy.submit.SubmitError`: ``signpose`` prints it as one line and exits 2.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager

from signpose.cli.common import add_flag, connection_failure, int_at_least
from signpose.deploy.submit import (
    DEFAULT_EXPERIMENT,
    DEFAULT_PACKAGE,
    DEFAULT_SCHEDULE_NAME,
    PACKAGE_VAR,
    REPO_ROOT,
    TOKEN_VAR,
    SubmitError,
    collect_params,
    make_client,
    resolve_package,
    schedule_run,
    submit_run,
    ui_prefix,
    validate_cron,
)

HOST_VAR = "KF_PIPELINES_ENDPOINT"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=os.environ.get(HOST_VAR),
                        help="KFP API endpoint, e.g. http://localhost:8080 after "
                             "`kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80` "
                             f"(default: ${HOST_VAR})")
    add_flag(parser, "--ui_host", default=None, help="base URL for printed links (default: --host)")
    parser.add_argument("--namespace", default=None,
                        help="KFP namespace (multi-user KFP: your profile namespace)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT,
                        help=f"KFP experiment the run belongs to, created if missing (default: {DEFAULT_EXPERIMENT})")
    parser.add_argument("--package", default=None,
                        help=f"compiled pipeline YAML (default: ${PACKAGE_VAR} or "
                             f"{DEFAULT_PACKAGE.relative_to(REPO_ROOT)})")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="pipeline parameter (repeatable; JSON values are parsed)")
    add_flag(parser, "--params_json", default=None, metavar="JSON",
             help="pipeline parameters as one JSON object (--param values win)")
    add_flag(parser, "--token_file", default=None, metavar="FILE",
             help=f"file holding a KFP API bearer token (or set ${TOKEN_VAR})")
    add_flag(parser, "--service_account", default=None,
             help="Kubernetes ServiceAccount the pipeline pods run as (default: the profile's)")


def add_parser(subparsers) -> None:
    """Adds `submit` and `schedule` to the `signpose` CLI."""
    submit = subparsers.add_parser("submit", help="submit one run of the compiled pipeline to KFP",
                                   description="Submit one run of the compiled pipeline to Kubeflow Pipelines.")
    _common(submit)
    add_flag(submit, "--run_name", default=None, help="display name of the run (default: KFP's)")
    submit.set_defaults(func=run_submit_command)

    schedule = subparsers.add_parser("schedule", help="create a recurring run (scheduled retraining) on KFP",
                                     description="Create a KFP recurring run that retrains on the newest "
                                                 "data under the input prefix.")
    _common(schedule)
    schedule.add_argument("--cron", required=True,
                          help='KFP cron, 6 fields with seconds first, e.g. "0 0 3 * * 1" (Mondays 03:00)')
    schedule.add_argument("--name", default=DEFAULT_SCHEDULE_NAME,
                          help=f"recurring run name (default: {DEFAULT_SCHEDULE_NAME})")
    add_flag(schedule, "--max_concurrency", type=int_at_least(1), default=1,
             help="runs of the schedule allowed at once (default: 1)")
    schedule.add_argument("--replace", action="store_true",
                          help="replace an existing recurring run of the same name (idempotent re-registration)")
    schedule.add_argument("--catchup", action="store_true",
                          help="backfill missed intervals (default: only the latest)")
    schedule.set_defaults(func=run_schedule_command)


def _require_host(args: argparse.Namespace) -> str:
    if not args.host:
        raise SubmitError(f"--host is required (or set {HOST_VAR})")
    return args.host


@contextmanager
def kfp_errors(host: str) -> Iterator[None]:
    """A KFP API that does not answer, or refuses us, as a :class:`SubmitError` saying what to check."""
    try:
        yield
    except SubmitError:
        raise
    except Exception as exc:
        failure = connection_failure(exc)
        if failure is not None:
            raise SubmitError(f"cannot reach Kubeflow Pipelines at {host} ({failure[1]}): check --host "
                              f"(or ${HOST_VAR}) and that the API answers there (a port-forward running?)"
                              ) from exc
        status = getattr(exc, "status", None)
        if type(exc).__name__ == "ApiException" and status in (401, 403):
            raise SubmitError(f"Kubeflow Pipelines at {host} refused the request ({status} {exc.reason}): "
                              f"check the token (--token_file or ${TOKEN_VAR}) and --namespace") from exc
        raise


def run_submit_command(args: argparse.Namespace) -> int:
    host = _require_host(args)
    package = resolve_package(args.package)
    params = collect_params(args.params_json, args.param, package)
    with kfp_errors(host):
        client = make_client(host, args.namespace, args.token_file, args.ui_host)
        done = submit_run(client, package, params, experiment=args.experiment, run_name=args.run_name,
                          namespace=args.namespace, ui_host=ui_prefix(host, args.ui_host),
                          service_account=args.service_account)
    print(f"run id: {done.id}")
    print(f"run link: {done.link}")
    return 0


def run_schedule_command(args: argparse.Namespace) -> int:
    host = _require_host(args)
    cron = validate_cron(args.cron)
    package = resolve_package(args.package)
    params = collect_params(args.params_json, args.param, package)
    with kfp_errors(host):
        client = make_client(host, args.namespace, args.token_file, args.ui_host)
        done = schedule_run(client, package, params, experiment=args.experiment, name=args.name, cron=cron,
                            namespace=args.namespace, ui_host=ui_prefix(host, args.ui_host),
                            max_concurrency=args.max_concurrency, replace=args.replace,
                            catchup=args.catchup, service_account=args.service_account)
    print(f"recurring run id: {done.id}")
    print(f"recurring run link: {done.link}")
    return 0
