"""Golden-image gate: a product's reference images must get their expected verdicts before it goes live.

It protects the line from a broken export, a wrong recipe or a model swap: any difference keeps the
daemon from becoming ready (GoldenCheckError, exit code GOLDEN; NOT_READY verdicts for the PLC).
"""

from __future__ import annotations

from inspectd.config.schema import ProductConfig
from inspectd.decide import decide
from inspectd.engines.images import load_frame
from inspectd.errors import CameraError, GoldenCheckError, ModelError
from inspectd.pipeline.runtime import ProductRuntime
from inspectd.postprocess import BadOutput


def check_golden(runtime: ProductRuntime, product: ProductConfig) -> list[str]:
    """One message per golden image that is missing, unreadable or gets another verdict; [] = pass.
    A golden image the model answers with a missing, mis-shaped or non-finite output raises ModelError."""
    failures: list[str] = []
    for g in product.golden:
        where = f"product {product.name!r} golden image {g.image.name}"
        if not g.image.is_file():
            failures.append(f"{where}: file not found: {g.image}")
            continue
        try:
            frame = load_frame(g.image)
            findings = runtime.postprocess(runtime.backend.infer(runtime.preprocess(frame)))
        except CameraError as e:
            failures.append(f"{where}: {e}")
            continue
        except BadOutput as e:  # not a wrong verdict but a broken model: refused like the self-check refuses it
            raise ModelError(f"product {product.name!r}: model {product.model.path.name}: golden image "
                             f"{g.image.name}: {e}") from None
        except Exception as e:  # a model that cannot run the reference image fails the gate, not the daemon
            failures.append(f"{where}: inference failed: {type(e).__name__}: {e}")
            continue
        got = decide(findings, product).outcome.value
        if got != g.expect:
            scores = ", ".join(f"{k}={v:.3f}" for k, v in findings.scores.items())
            failures.append(f"{where}: expected {g.expect}, got {got} ({scores}; model sha256 "
                            f"{runtime.backend.model_sha256[:12]}…)")
    return failures


def require_golden(runtime: ProductRuntime, product: ProductConfig) -> None:
    """check_golden for the daemon: raise GoldenCheckError listing every failure."""
    failures = check_golden(runtime, product)
    if failures:
        raise GoldenCheckError(f"golden-image gate failed for product {product.name!r} "
                               f"({len(failures)} of {len(product.golden)}):\n" + "\n".join(failures))
