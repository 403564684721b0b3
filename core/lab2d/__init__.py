"""The 2D laboratory (issue 18): a point cloud's diffusion with everything visible and exact.

- :mod:`core.lab2d.data`      presets, the photo's dark pixels, painting, CSV/NPZ (≤ 10,000 points)
- :mod:`core.lab2d.exact`     E[x_0|x_t], ε̂, the score and the density q(x_t) of a finite set (:class:`Exact2D`)
- :mod:`core.lab2d.gaussian`  N(μ, Σ) data: the linear denoiser, every sampler's output law, W2 vs steps
- :mod:`core.lab2d.mlp`       a small ε-network (sinusoidal t embedding) and its live training loop
- :mod:`core.lab2d.quality`   the energy distance between particles and data
- :mod:`core.lab2d.run`       sampling N particles with core.samplers; the figure per sampler and step count
- :mod:`core.lab2d.render`    PNG/GIF pictures for the CLI (``ddpm lab2d``)
"""
