"""What every part of the Plan is made of: frozen pydantic models, and the MAC an address gets."""
from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def mac_for(ip: str) -> str:
    """0a:58 followed by the IPv4 address, as Kubernetes CNIs do: readable in any dump."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)
