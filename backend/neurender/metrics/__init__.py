"""Temporal-consistency and fidelity metrics of rendered frame sequences (warp error, flicker, PSNR/SSIM, sharpness).

One module per metric family: ``motion`` (the flow the temporal metrics follow), ``temporal`` (warp error, pixel MSE,
brightness flicker), ``fidelity`` (PSNR, SSIM, sharpness), ``plot``, ``report`` (a whole sequence at once) and
``cli_metrics`` (``neurender metrics``). Frames are float arrays in 0..1, (H, W, 3) each.
"""
