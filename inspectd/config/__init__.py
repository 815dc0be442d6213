"""Station and product configuration: schema (pydantic) and loading (YAML with line numbers)."""

from inspectd.config.load import Config, load_config, load_product, load_station
from inspectd.config.schema import ProductConfig, StationConfig

__all__ = ["Config", "ProductConfig", "StationConfig", "load_config", "load_product", "load_station"]
