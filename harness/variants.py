"""The variant registry where the README's example imports it from (`harness.config.variants` is
its home)."""

from harness.config.variants import (
    Variant,
    create_variant,
    get_variant,
    list_variants,
    register_variant,
)

__all__ = ["Variant", "create_variant", "get_variant", "list_variants", "register_variant"]
