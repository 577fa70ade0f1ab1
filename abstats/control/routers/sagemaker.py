"""Amazon SageMaker production variants: UpdateEndpointWeightsAndCapacities, then DescribeEndpoint
to confirm the desired weights were accepted (boto3; the optional ``sagemaker`` extra)."""

from __future__ import annotations

from typing import Any

from abstats.control.routers.base import PermanentRouterError, RouterResult
from abstats.engine.ramp import largest_remainder_percentages
from abstats.errors import RouterError


class SageMakerRouter:
    name = "sagemaker"

    def __init__(
        self,
        endpoint_name: str,
        *,
        region: str = "us-east-1",
        variant_names: dict[str, str] | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        self.endpoint_name = endpoint_name
        self.region = region
        self.variant_names = variant_names or {}
        self.endpoint_url = endpoint_url

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SageMakerRouter:
        return cls(
            str(config["endpoint_name"]),
            region=str(config.get("region", "us-east-1")),
            variant_names={
                str(k): str(v) for k, v in dict(config.get("variant_names") or {}).items()
            },
            endpoint_url=config.get("endpoint_url"),
        )

    def _client(self) -> Any:
        try:
            import boto3
        except ImportError as exc:  # optional dependency
            raise PermanentRouterError(
                "the sagemaker router needs boto3: pip install 'abstats[sagemaker]'"
            ) from exc
        return boto3.client("sagemaker", region_name=self.region, endpoint_url=self.endpoint_url)

    def _production_name(self, variant: str) -> str:
        return self.variant_names.get(variant, variant)

    def apply(self, weights: dict[str, float]) -> RouterResult:
        from botocore.exceptions import BotoCoreError, ClientError

        percentages = largest_remainder_percentages(weights)
        desired = [
            {"VariantName": self._production_name(v), "DesiredWeight": float(p)}
            for v, p in percentages.items()
        ]
        client = self._client()
        try:
            client.update_endpoint_weights_and_capacities(
                EndpointName=self.endpoint_name, DesiredWeightsAndCapacities=desired
            )
        except (ClientError, BotoCoreError) as exc:
            raise RouterError(
                f"SageMaker UpdateEndpointWeightsAndCapacities on {self.endpoint_name!r} failed: {exc}"
            ) from exc
        read_back = self.read()
        expected = {v: float(p) for v, p in percentages.items()}
        if read_back is None or any(
            abs(read_back.get(v, -1.0) - w) > 1e-6 for v, w in expected.items()
        ):
            raise RouterError(
                f"SageMaker endpoint {self.endpoint_name!r} reports weights {read_back} after the "
                f"update, expected {expected}"
            )
        return RouterResult(
            backend=self.name,
            sent={"DesiredWeightsAndCapacities": desired},
            read_back=read_back,
            details={"endpoint_name": self.endpoint_name},
        )

    def read(self) -> dict[str, float] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            described = self._client().describe_endpoint(EndpointName=self.endpoint_name)
        except (ClientError, BotoCoreError) as exc:
            raise RouterError(
                f"SageMaker DescribeEndpoint {self.endpoint_name!r} failed: {exc}"
            ) from exc
        by_name = (
            {self._production_name(v): v for v in self.variant_names} if self.variant_names else {}
        )
        weights: dict[str, float] = {}
        for pv in described.get("ProductionVariants", []):
            name = pv["VariantName"]
            # while the endpoint is Updating, CurrentWeight lags: the accepted DesiredWeight counts
            weight = pv.get("DesiredWeight", pv.get("CurrentWeight"))
            if weight is not None:
                weights[by_name.get(name, name)] = float(weight)
        return weights
