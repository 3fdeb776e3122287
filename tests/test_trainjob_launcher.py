"""The KFP task of a multi-node training (it submits and follows the TrainJob): compiled settings.

No ``from __future__ import annotations`` here: KFP reads the component's annotations as types."""

import yaml

from signpose.deploy.cluster import DEFAULT_SETTINGS


def test_the_launcher_task_of_a_multi_node_training_asks_for_no_gpu_but_gets_the_secrets(tmp_path):
    from kfp import compiler, dsl

    from signpose.deploy.images import TRAIN_IMAGE
    from signpose.deploy.trainjob import LAUNCHER_RESOURCES, configure_launcher_task

    @dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
    def launch(nodes: int) -> str:
        return str(nodes)

    @dsl.pipeline(name="launcher")
    def launcher(nodes: int = 2):
        configure_launcher_task(launch(nodes=nodes))

    out = tmp_path / "launcher.yaml"
    compiler.Compiler().compile(launcher, str(out))
    spec, platform_doc = [d for d in yaml.safe_load_all(out.read_text()) if d]
    [executor] = spec["deploymentSpec"]["executors"].values()
    resources = executor["container"]["resources"]
    assert "accelerator" not in resources and resources["resourceCpuLimit"] == LAUNCHER_RESOURCES.cpu_limit
    [task] = spec["root"]["dag"]["tasks"].values()
    assert task["cachingOptions"] == {} and task["retryPolicy"]["maxRetryCount"] == DEFAULT_SETTINGS.training_retry.num_retries
    [k8s] = platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    assert {s["secretName"] for s in k8s["secretAsEnv"]} == {"signpose-s3", "signpose-mlflow"}
    assert "nodeSelector" not in k8s and "tolerations" not in k8s
    assert k8s["podMetadata"]["labels"] == dict(DEFAULT_SETTINGS.pod_labels)
