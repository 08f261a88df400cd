"""The reward pipeline: decode -> geometry -> gaussians -> render -> terms -> combine.

Start at ``pipeline.py``: ``RewardPipeline.run`` reads top to bottom in numbered steps.
"""

from service.pipeline.pipeline import PipelineOutput, RewardPipeline

__all__ = ["RewardPipeline", "PipelineOutput"]
