"""What a run cost: each instance segment's running time × its hourly price, summed.

Prices, best first: the one the segment recorded in its state events (the spot price when it started), the
run spec's price for that type (spot price at `launcher train`), the on-demand list price (upper bound).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from launcher import catalog


@dataclass
class Segment:
    id: str
    instance_id: str | None
    instance_type: str | None
    az: str | None
    start: float
    end: float
    price_per_hour: float | None
    price_source: str
    live: bool = False

    @property
    def hours(self) -> float:
        return max(0.0, self.end - self.start) / 3600.0

    @property
    def cost_usd(self) -> float:
        return self.hours * (self.price_per_hour or 0.0)

    def to_dict(self) -> dict:
        return {**asdict(self), "hours": self.hours, "cost_usd": self.cost_usd}


def segment_price(events: list[dict], instance_type: str | None, spec_prices: dict[str, float]) -> tuple[float | None, str]:
    for event in events:
        price = event.get("price_per_hour")
        if isinstance(price, (int, float)) and price > 0:
            return float(price), "recorded"
    if instance_type and spec_prices.get(instance_type):
        return float(spec_prices[instance_type]), "run spec"
    if instance_type in catalog.INSTANCE_TYPES:
        return catalog.INSTANCE_TYPES[instance_type].on_demand_usd, "on-demand list price"
    return None, "unknown"


def build_segment(seg_id: str, events: list[dict], metrics: list[dict], spec_prices: dict[str, float], *,
                  live: bool, now: float) -> Segment | None:
    times = [r["time"] for r in events + metrics if isinstance(r.get("time"), (int, float))]
    if not times:
        return None
    first = next((e for e in events if e.get("instance_type")), {})
    price, source = segment_price(events, first.get("instance_type"), spec_prices)
    return Segment(id=seg_id, instance_id=first.get("instance_id"), instance_type=first.get("instance_type"),
                   az=first.get("az"), start=min(times), end=max(now, max(times)) if live else max(times),
                   price_per_hour=price, price_source=source, live=live)


def total(segments: list[Segment]) -> float:
    return sum(s.cost_usd for s in segments)


def projected(segments: list[Segment], remaining_s: float | None, price_per_hour: float | None) -> float | None:
    """Cost so far plus the remaining time at the current price; None when the remaining time is unknown."""
    if remaining_s is None or price_per_hour is None:
        return None
    return total(segments) + remaining_s / 3600.0 * price_per_hour
