"""Step 5: the reward terms. Each is a function of tensors returning a TermResult:

- reconstruction.py: held-out frames re-rendered at their own poses (PSNR / SSIM / LPIPS),
- trajectory.py: estimated camera path vs. the requested one (camera_words.py parses prompts),
- plausibility.py: a VLM judges novel views of the reconstruction (needs a VLM),
- quality.py: visual quality for the trainer's dynamic phase.
"""
