"""The synthesis engine: lockstep multi-frame denoising, cross-frame attention, fixed noise."""
