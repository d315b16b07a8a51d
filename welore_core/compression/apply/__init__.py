"""Step 3: a plan applied. The factors A = U_r √S_r, B = √S_r V_rᵀ of the weight SVD or of ActSVD (`factors`),
layers swapped for `models.LowRankLinear` in a loaded model (`compress`) or a checkpoint rewritten tensor by
tensor (`stream`), and the compressed folder written with its rank map and manifest (`folder`)."""
from __future__ import annotations

from .compress import (MODES, CompressionConfig, LayerTarget, compress_to, factor_layer, factors_of, layer_targets,
                       truncate_layer, truncated_of)
from .factors import svd_factors, truncate_weight, whitened_factors
from .folder import CompressionReport, check_output, is_compressed_folder, read_report, save_compressed, write_metadata
from .stream import compress_streamed, streamable

__all__ = ["MODES", "CompressionConfig", "CompressionReport", "LayerTarget", "check_output", "compress_streamed",
           "compress_to", "factor_layer", "factors_of", "is_compressed_folder", "layer_targets", "read_report",
           "save_compressed", "streamable", "svd_factors", "truncate_layer", "truncate_weight", "truncated_of",
           "whitened_factors", "write_metadata"]
