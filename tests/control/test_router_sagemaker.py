"""SageMaker router against moto's server mode (a real HTTP service speaking the SageMaker API;
there is no AWS account here): UpdateEndpointWeightsAndCapacities, then DescribeEndpoint."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from abstats.control import service
from abstats.control.outbox import deliver_pending
from abstats.control.routers.base import RouterResult
from abstats.control.routers.sagemaker import SageMakerRouter
from abstats.db.models import Decision, Experiment
from abstats.errors import RouterError
from tests.control.conftest import make_experiment

boto3 = pytest.importorskip("boto3")
MOTO = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
pytestmark = pytest.mark.skipif(not Path(MOTO).exists(), reason="moto[server] is not installed")
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [MOTO, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.1)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def endpoint(moto_url: str) -> str:
    client = boto3.client("sagemaker", region_name=REGION, endpoint_url=moto_url)
    role = "arn:aws:iam::123456789012:role/sm"
    for name in ("churn-xgb-1", "churn-xgb-2"):
        client.create_model(
            ModelName=name,
            ExecutionRoleArn=role,
            PrimaryContainer={"Image": "123.dkr.ecr.us-east-1.amazonaws.com/xgb:1"},
        )
    client.create_endpoint_config(
        EndpointConfigName="churn-config",
        ProductionVariants=[
            {
                "VariantName": name,
                "ModelName": f"churn-xgb-{i}",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": 1.0,
            }
            for i, name in ((1, "Xgb1"), (2, "Xgb2"))
        ],
    )
    client.create_endpoint(EndpointName="churn-endpoint", EndpointConfigName="churn-config")
    return "churn-endpoint"


def test_sagemaker_weights_applied_and_confirmed(
    moto_url: str, endpoint: str, committed: Engine
) -> None:
    router = {
        "backend": "sagemaker",
        "config": {
            "endpoint_name": endpoint,
            "region": REGION,
            "endpoint_url": moto_url,
            "variant_names": {"v1": "Xgb1", "v2": "Xgb2"},
        },
    }
    with Session(committed) as session, session.begin():
        make_experiment(session, "sm", router=router)
        service.start(session, "sm", actor="key:ops")  # ramp: v2 at 5%
    assert deliver_pending(committed) == 1
    described = boto3.client(
        "sagemaker", region_name=REGION, endpoint_url=moto_url
    ).describe_endpoint(EndpointName=endpoint)
    assert {v["VariantName"]: v["DesiredWeight"] for v in described["ProductionVariants"]} == {
        "Xgb1": 95.0,
        "Xgb2": 5.0,
    }
    with Session(committed) as session:
        result = session.scalars(
            select(Decision.router_result).where(Decision.action == "start")
        ).one()
    assert result is not None and result["read_back"] == {"v1": 95.0, "v2": 5.0}
    assert result["sent"]["DesiredWeightsAndCapacities"] == [
        {"VariantName": "Xgb1", "DesiredWeight": 95.0},
        {"VariantName": "Xgb2", "DesiredWeight": 5.0},
    ]


def test_sagemaker_unknown_variant_is_a_router_error(
    moto_url: str, endpoint: str, committed: Engine
) -> None:
    router = SageMakerRouter(
        endpoint, region=REGION, endpoint_url=moto_url, variant_names={"v1": "Xgb1", "v2": "Nope"}
    )
    with pytest.raises(RouterError, match="UpdateEndpointWeightsAndCapacities"):
        router.apply({"v1": 50.0, "v2": 50.0})
    ok: RouterResult = SageMakerRouter(
        endpoint, region=REGION, endpoint_url=moto_url, variant_names={"v1": "Xgb1", "v2": "Xgb2"}
    ).apply({"v1": 1.0, "v2": 2.0})
    assert ok.read_back == {"v1": 33.0, "v2": 67.0}  # largest-remainder percentages
    # a missing endpoint, retried by the outbox and finally pausing the experiment
    missing = {
        "backend": "sagemaker",
        "config": {"endpoint_name": "no-such-endpoint", "region": REGION, "endpoint_url": moto_url},
    }
    with Session(committed) as session, session.begin():
        make_experiment(session, "sm-missing", router=missing, policy={"ramp": None})
        service.start(session, "sm-missing", actor="key:ops")
    from datetime import UTC, datetime, timedelta

    for minutes in (0, 10, 30):
        deliver_pending(
            committed, now=datetime.now(UTC) + timedelta(minutes=minutes), max_router_attempts=3
        )
    with Session(committed) as session:
        assert (
            session.scalars(select(Experiment.status).where(Experiment.key == "sm-missing")).one()
            == "paused"
        )
