"""reward3d: a 3D-consistency reward for generated video.

The data flow is visible in the layout of ``service/pipeline``:
decode -> geometry -> gaussians -> render -> terms -> combine.
The API (``service/api``) and the queue (``service/jobs``) wrap it.
"""

__version__ = "0.1.0"

# Bump when a change alters scores for the same input and options (cache keys include it).
REWARD_SPEC_VERSION = "1.1"  # 1.1: plane + parallax evidence, partners by parallax
