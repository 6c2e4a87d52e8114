"""The filter's settings: read once by cli.py into this frozen value."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rules import defaults
from rules.classify import Network


@dataclass(frozen=True)
class Settings:
    secret: bytes
    case_prefix: str = "CS"
    organization: str = "Customer Support"
    trusted_networks: tuple[Network, ...] = ()
    # With the milter in front: trust a client address only from its stamp.
    require_stamp: bool = False
    templates_dir: Path | None = None
    history_limit: int = defaults.HISTORY_LIMIT
    tick_seconds: float = defaults.TICK_SECONDS  # the scheduler's period
    # outbox
    reinject_host: str = "127.0.0.1"
    reinject_port: int = 10026
    outbox_batch: int = 50
    outbox_lease_seconds: int = 120
    retry_min_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    helo_name: str = "casegate.localhost"
    extra: dict[str, str] = field(default_factory=dict)
    # Files that travel with a notification (config [files]); larger ones stay stored.
    files_message_max: int = defaults.FILES_MESSAGE_MAX
    files_case_max: int = defaults.FILES_CASE_MAX
